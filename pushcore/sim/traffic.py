"""The simulator's traffic: pushes at a fixed rate, each carrying what the device checks.

Every message the :class:`Pusher` sends names its run, its target device
(by index), the device's own counter (1, 2, 3, … per device) and the send
time in nanoseconds since the Unix epoch::

    b"pcsim1 <run id> <device index> <counter> <send time ns>"

The device side (:mod:`pushcore.sim.simulator`) checks the counter — the next
one expected is fine, a later one leaves a hole (missing until it fills),
an earlier one fills a hole (out of order) or was seen (duplicate) — and
takes ``now - send time`` as the end-to-end latency. Sender and devices read
the same clock when they run on one machine.

Sinks deliver a batch of messages to a gateway:

* :class:`ServerSink` — an in-process :class:`pushcore.Server`: the batch
  runs on the server's loop thread, one ``server.push`` per message;
* :class:`AdminSink` — a remote gateway through its admin API
  (``POST /v1/push/batch``), one HTTP request per batch. Each message
  carries an idempotency key made of the run, the device and the counter,
  so a batch sent again after a lost answer (a dropped connection, a
  gateway killed between its commit and its reply) is stored once.

A batch the sink could not confirm is sent again — the same messages,
before anything newer — until it goes through or the pusher stops.
"""
from __future__ import annotations

import logging
import random
import threading
import time
from array import array
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from ..loop.handover import call_on_loop

if TYPE_CHECKING:
    from ..gateway.server import Server

__all__ = ["MAGIC", "encode_payload", "parse_payload", "Pusher", "ServerSink", "AdminSink", "Sink"]

log = logging.getLogger("pushcore.sim.simulator")

MAGIC = b"pcsim1"


def encode_payload(run_id: int, index: int, counter: int, sent_ns: int) -> bytes:
    """The payload of one simulator message."""
    return b"pcsim1 %d %d %d %d" % (run_id, index, counter, sent_ns)


def parse_payload(payload: bytes) -> tuple[int, int, int, int] | None:
    """``(run id, device index, counter, send time ns)``, or None when it is not a simulator message."""
    parts = bytes(payload).split(b" ")
    if len(parts) != 5 or parts[0] != MAGIC:
        return None
    try:
        return int(parts[1]), int(parts[2]), int(parts[3]), int(parts[4])
    except ValueError:
        return None


class Sink(Protocol):
    """Delivers ``(device index, counter)`` messages; returns how many were accepted, in order."""

    def send(self, batch: Sequence[tuple[int, int]]) -> int: ...


class BatchClient(Protocol):
    """What :class:`AdminSink` needs of a :class:`pushcore.admin.client.AdminClient`."""

    def push_batch(self, messages: list[dict[str, Any]]) -> list[int]: ...


class ServerSink:
    """Pushes into an in-process :class:`pushcore.Server` on its loop thread (one hand-over per batch).

    The send time is read just before each ``server.push``, so the latency
    includes storing, encoding, the socket and the device's handling.
    """

    def __init__(self, server: Server, id_prefix: str, run_id: int, *, timeout: float = 30.0,
                 id_of: Callable[[int], str] | None = None) -> None:
        self.server = server
        self.run_id = run_id
        self.timeout = timeout
        self.id_of: Callable[[int], str] = id_of or (lambda i: f"{id_prefix}{i}")

    def send(self, batch: Sequence[tuple[int, int]]) -> int:
        server, run_id, id_of = self.server, self.run_id, self.id_of

        def push_all() -> int:
            push = server.push
            clock = time.time_ns
            done = 0
            try:
                for index, counter in batch:
                    push(id_of(index), b"pcsim1 %d %d %d %d" % (run_id, index, counter, clock()))
                    done += 1
            except Exception as exc:  # the rest of the batch is not sent; the pusher takes it back
                log.warning("simulator: push failed after %d of %d messages: %s", done, len(batch), exc)
            return done

        return call_on_loop(server.loop, push_all, timeout=self.timeout)


class AdminSink:
    """Pushes through a gateway's admin API, one ``POST /v1/push/batch`` per batch.

    Message ``(index, counter)`` has the idempotency key
    ``pcsim-<run id>-<index>-<counter>``; until the gateway confirms it, the
    sink keeps its payload (with its send time), so sending it again repeats
    it exactly and the gateway answers the first seq instead of storing a copy.
    """

    def __init__(self, client: BatchClient, id_prefix: str, run_id: int,
                 id_of: Callable[[int], str] | None = None) -> None:
        self.client = client  # a pushcore.admin.client.AdminClient
        self.run_id = run_id
        self.id_of: Callable[[int], str] = id_of or (lambda i: f"{id_prefix}{i}")
        self._unconfirmed: dict[tuple[int, int], str] = {}  # (index, counter) -> payload sent

    def send(self, batch: Sequence[tuple[int, int]]) -> int:
        now = time.time_ns()
        run_id, id_of, unconfirmed = self.run_id, self.id_of, self._unconfirmed
        messages = []
        for index, counter in batch:
            payload = unconfirmed.get((index, counter))
            if payload is None:
                payload = unconfirmed[index, counter] = f"pcsim1 {run_id} {index} {counter} {now}"
            messages.append({"device": id_of(index), "payload": payload,
                             "idempotency_key": f"pcsim-{run_id}-{index}-{counter}"})
        accepted = len(self.client.push_batch(messages))
        for item in batch[:accepted]:
            unconfirmed.pop(item, None)
        return accepted


class Pusher:
    """Sends messages at *rate* per second to devices ``0 .. devices-1`` chosen at random.

    Runs in its own thread, in ticks of *tick* seconds; each tick sends the
    messages due by then in one batch (at most ``max_batch``; if the sink
    falls behind, the rate achieved is lower and says so). A batch the sink
    could not confirm (it raised, or accepted only part) is sent again, the
    same messages and nothing newer, after *tick*, then twice as long, … up
    to one second, until it goes through (so a device's messages stay in
    order; ``errors`` counts the messages of every failed attempt). At the
    stop, one still unconfirmed is tried once more, then taken back.
    ``sent[i]`` is the last counter sent to device *i* and accepted by the
    sink, so devices are never expected to get a message that was not sent.
    """

    def __init__(self, sink: Sink, devices: int, rate: float, *, tick: float = 0.01,
                 max_batch: int = 5000, seed: int | None = None) -> None:
        if devices < 1 or not rate > 0:
            raise ValueError("the pusher needs devices >= 1 and rate > 0")
        self.sink = sink
        self.devices = devices
        self.rate = float(rate)
        self.tick = tick
        self.max_batch = max_batch
        self.sent = array("Q", bytes(8 * devices))  # last counter per device
        self.total = 0
        self.errors = 0
        self.started_at: float | None = None
        self.stopped_at: float | None = None
        self._rng = random.Random(seed)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("the pusher is already started")
        self._thread = threading.Thread(target=self._run, name="pushcore-pusher", daemon=True)
        self._thread.start()

    def request_stop(self) -> None:
        """Ask the thread to stop after the batch in flight, without waiting."""
        self._stop.set()

    @property
    def running(self) -> bool:
        """True while the thread is alive (a batch may still be in flight)."""
        return self._thread is not None and self._thread.is_alive()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop after the batch in flight; waits for it.

        Do not call it from the thread that runs the loop an in-process sink
        pushes through (the batch in flight waits for that loop): use
        :meth:`request_stop` and keep the loop turning until :attr:`running`
        is false, as :meth:`pushcore.Simulator.run` does.
        """
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def achieved_rate(self) -> float:
        if self.started_at is None:
            return 0.0
        end = self.stopped_at if self.stopped_at is not None else time.monotonic()
        return self.total / max(end - self.started_at, 1e-9)

    def _run(self) -> None:
        start = self.started_at = time.monotonic()
        scheduled = 0
        rng = self._rng
        sent = self.sent
        devices = self.devices
        retry: list[tuple[int, int]] = []  # sent, not confirmed: goes again before anything newer
        delay = self.tick
        try:
            while not self._stop.is_set():
                if retry:
                    if self._stop.wait(delay):
                        break
                    batch, delay = retry, min(2 * delay, 1.0)
                else:
                    now = time.monotonic()
                    due = int((now - start) * self.rate) - scheduled
                    if due <= 0:
                        self._stop.wait(min(self.tick, (scheduled + 1) / self.rate - (now - start)))
                        continue
                    due = min(due, self.max_batch)
                    batch = []
                    for _ in range(due):
                        index = rng.randrange(devices)
                        sent[index] += 1
                        batch.append((index, sent[index]))
                    scheduled += due
                    delay = self.tick
                retry = self._send(batch)
                # a slow sink must not make the next tick try to catch up without bound
                behind = int((time.monotonic() - start) * self.rate) - scheduled
                if behind > self.max_batch:
                    scheduled += behind - self.max_batch
        finally:
            if retry:
                retry = self._send(retry)  # one last try, then what is left was never sent
                for index, _counter in reversed(retry):
                    sent[index] -= 1  # not expected by the device
            self.stopped_at = time.monotonic()

    def _send(self, batch: list[tuple[int, int]]) -> list[tuple[int, int]]:
        """Send *batch*; return its part the sink did not confirm."""
        try:
            accepted = self.sink.send(batch)
        except Exception as exc:
            log.warning("simulator: the pusher's sink failed (the batch goes again): %s", exc)
            accepted = 0
        self.total += accepted
        if accepted < len(batch):
            self.errors += len(batch) - accepted
            return batch[accepted:]
        return []

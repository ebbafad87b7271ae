"""Several gateway processes on one machine, one port: a small supervisor over :class:`Server`.

A :class:`Supervisor` forks *workers* processes. Each builds its own
:class:`pushcore.Server` with the factory it was given (``make_server(info)``,
*info* a :class:`WorkerInfo`) and runs it on its own loop; every worker's
Server listens on the same port with ``reuse_port=True`` (``SO_REUSEPORT``:
the kernel spreads new connections over the workers). The supervisor:

* picks the ports once: it binds a *probe* socket per port (``SO_REUSEPORT``,
  never listening, so it takes no connections) and keeps it for its whole
  life, so port 0 becomes one real port that every worker (and every
  restarted worker) binds, and nothing else takes the port between restarts;
* restarts a worker that exits while it is not stopping (a crash, a
  ``SIGKILL``, a drain somebody asked of that worker alone), after a backoff
  (0.1 s doubling to 5 s; back to 0.1 s once a worker ran for 10 s), and
  counts the restarts;
* gives up, with :class:`SupervisorError` naming the worker and its error,
  when a worker fails to start (the factory raises, the port cannot be
  bound, ...) several times in a row, rather than looping for ever;
* on ``SIGTERM`` / ``SIGINT`` (in :meth:`Supervisor.run`) or :meth:`Supervisor.stop`
  sends ``SIGTERM`` to every worker; each drains (every device gets GOAWAY
  ``SHUTTING_DOWN``, the store is closed) and exits; workers still running
  after *drain_timeout* get ``SIGKILL``. A second signal kills them at once.

Workers are made with ``os.fork()`` (Linux, like the loop itself): the
factory may be any callable, a closure included; nothing is pickled. Fork
from a process that holds no other threads and no running loops: the
supervisor itself runs none (it waits in ``select``), so call
:meth:`Supervisor.start` / :meth:`Supervisor.run` before the embedding
program starts threads (an admin API, a Server of its own, a client) — a
lock another thread held at the fork stays locked in the worker for ever.
The factory runs in the worker, so whatever it opens (the store, an admin
API thread, the Server's loop) belongs to that worker alone. A worker whose
supervisor dies gets ``SIGTERM`` (``PR_SET_PDEATHSIG``) and drains.

Within a worker, the supervisor's signal handling replaces the Server's own
(installed by ``Server.run``): the first ``SIGTERM`` / ``SIGINT`` drains with
the supervisor's drain timeout, later ones are ignored (a Ctrl-C reaches the
supervisor and every worker of the terminal's process group, and the
supervisor forwards its own ``SIGTERM`` too: one drain, not an abort).
"""
from __future__ import annotations

import ctypes
import logging
import os
import selectors
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import FrameType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..gateway.server import Server

__all__ = ["PortUnavailable", "Supervisor", "SupervisorError", "WorkerInfo", "WorkerState"]

log = logging.getLogger("pushcore.cluster.supervisor")

_READY = b"R"  # the worker's Server listens and drains on SIGTERM
_FAILED = b"E"  # followed by the reason the worker could not start
EXIT_STARTUP_FAILED = 3  # a worker's exit status when it could not start
_PR_SET_PDEATHSIG = 1


class SupervisorError(RuntimeError):
    """The supervisor gave up: a worker could not start, several times in a row."""


class PortUnavailable(OSError):
    """A port the supervisor was to reserve cannot be bound; *error* is the ``OSError`` of the bind."""

    def __init__(self, name: str, host: str, port: int, error: OSError) -> None:
        super().__init__(error.errno, f"cannot bind the {name} port {host}:{port}: {error.strerror or error}")
        self.name, self.host, self.port, self.error = name, host, port, error


@dataclass(frozen=True)
class WorkerInfo:
    """What a worker's factory is told about the worker it builds a Server for."""

    index: int  #: 0 .. count-1, stable across restarts
    count: int  #: how many workers the supervisor runs
    incarnation: int  #: 0 for the first start of this index, +1 for each restart
    host: str  #: the address every worker's Server listens on
    port: int  #: the device port every worker's Server listens on (with ``reuse_port=True``)
    #: the other ports the supervisor reserved (``Supervisor(ports=...)``), by name: e.g. ``"admin"``
    ports: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class WorkerState:
    """One worker as :meth:`Supervisor.workers` sees it."""

    index: int
    pid: int | None  #: None while it waits to be restarted
    incarnation: int
    alive: bool  #: a process runs for this index
    ready: bool  #: its Server listens
    restarts: int  #: how many times this index was restarted


class _Slot:
    """One worker index: its current process, if any, and its restart bookkeeping."""

    __slots__ = ("index", "pid", "incarnation", "sentinel", "ready", "ready_at", "started_at",
                 "restarts", "failures", "backoff", "due", "message", "buffer")

    def __init__(self, index: int, backoff: float) -> None:
        self.index = index
        self.pid: int | None = None
        self.incarnation = -1
        self.sentinel: int | None = None  # read end of the worker's pipe: its messages, then EOF when it exits
        self.ready = False
        self.ready_at = 0.0
        self.started_at = 0.0
        self.restarts = 0
        self.failures = 0  # startup failures in a row
        self.backoff = backoff
        self.due: float | None = 0.0  # when to (re)start it; None while it runs
        self.message = ""  # why its last start failed
        self.buffer = b""


class Supervisor:
    """*workers* processes, each serving a Server from *make_server*, on one port.

    Parameters
    ----------
    make_server
        called in each new worker with its :class:`WorkerInfo`; returns the
        worker's Server, made with ``host=info.host``, ``port=info.port`` and
        ``reuse_port=True`` (a Server on another port fails the worker's start).
        It runs in the worker process: open the store, start an admin API
        (on ``info.ports["admin"]``, with ``reuse_port=True``) there.
    workers
        how many worker processes (>= 1; default ``os.cpu_count()``).
    host, port
        the device address; port 0 = a free port, picked once for all workers.
    ports
        more ports to reserve for every worker, by name: ``{"admin": ("127.0.0.1", 0)}``
        gives each worker ``info.ports["admin"]``, one port for all.
    drain_timeout
        seconds a worker may take to drain after ``SIGTERM``; then ``SIGKILL``.
    backoff, max_backoff
        the first delay before restarting a worker that exited, and its cap
        (the delay doubles while a worker keeps exiting soon after its start).
    stable_after
        seconds a worker must have run for its next restart to start over at
        *backoff*.
    start_attempts
        starts in a row a worker may fail (exit before its Server listens)
        before the supervisor gives up with :class:`SupervisorError`.
    start_timeout
        seconds a worker may take from its fork until its Server listens;
        past it, it is killed and that counts as a failed start.
    """

    def __init__(
        self,
        make_server: Callable[[WorkerInfo], Server],
        workers: int | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        ports: Mapping[str, tuple[str, int]] | None = None,
        drain_timeout: float = 15.0,
        backoff: float = 0.1,
        max_backoff: float = 5.0,
        stable_after: float = 10.0,
        start_attempts: int = 5,
        start_timeout: float = 30.0,
    ) -> None:
        if workers is None:
            workers = os.cpu_count() or 1
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ValueError(f"workers must be an int >= 1, got {workers!r}")
        if isinstance(start_attempts, bool) or not isinstance(start_attempts, int) or start_attempts < 1:
            raise ValueError(f"start_attempts must be an int >= 1, got {start_attempts!r}")
        for name, value in (("drain_timeout", drain_timeout), ("backoff", backoff), ("max_backoff", max_backoff),
                            ("stable_after", stable_after), ("start_timeout", start_timeout)):
            if not value > 0:
                raise ValueError(f"{name} must be > 0 seconds, got {value!r}")
        if sys.platform != "linux":
            raise RuntimeError("the supervisor forks its workers: Linux only")
        self._make_server = make_server
        self.count = workers
        self._host = host
        self._port = port
        self._extra = dict(ports or {})
        if "" in self._extra:
            raise ValueError("a reserved port needs a name")
        self.drain_timeout = float(drain_timeout)
        self._backoff = float(backoff)
        self._max_backoff = float(max_backoff)
        self._stable_after = float(stable_after)
        self._start_attempts = start_attempts
        self._start_timeout = float(start_timeout)
        self._probes: list[socket.socket] = []
        self._address: tuple[str, int] | None = None
        self._ports: dict[str, int] = {}
        self._slots = [_Slot(i, self._backoff) for i in range(workers)]
        self._selector: selectors.BaseSelector | None = None
        self._wake_r = self._wake_w = -1  # self-pipe: signals and request_stop() wake the wait
        self._stop_requested = False
        self._kill_requested = False
        self._stopping = False
        self._started = False
        self._closed = False
        self._pid = os.getpid()
        #: restarts of all workers together
        self.restarts = 0

    # -- what it runs ----------------------------------------------------------

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)`` every worker listens on (after :meth:`start`)."""
        if self._address is None:
            raise RuntimeError("the supervisor is not started")
        return self._address

    @property
    def ports(self) -> dict[str, int]:
        """The other reserved ports by name (after :meth:`start`)."""
        return dict(self._ports)

    def workers(self) -> list[WorkerState]:
        """Every worker index: its pid, incarnation, whether it runs and listens, its restarts."""
        return [WorkerState(s.index, s.pid, max(s.incarnation, 0), s.pid is not None, s.ready, s.restarts)
                for s in self._slots]

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> tuple[str, int]:
        """Reserve the ports, fork every worker, return ``(host, port)`` once all of them listen.

        Raises :class:`PortUnavailable` (an ``OSError``) when a port cannot be reserved (nothing is forked
        then) and :class:`SupervisorError` when a worker cannot start (after
        *start_attempts* tries; the others are stopped).
        """
        if self._started:
            raise RuntimeError("the supervisor is already started")
        if os.getpid() != self._pid:
            raise RuntimeError("a supervisor must be started in the process that made it")
        self._started = True
        self._reserve_ports()
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        deadline = time.monotonic() + self._start_timeout * self._start_attempts + self._max_backoff * 2
        try:
            while not all(s.ready for s in self._slots):
                if self._stop_requested:
                    break
                if time.monotonic() > deadline:
                    raise SupervisorError("the workers did not all start in time")
                self._step()
        except BaseException:
            self.stop()
            raise
        return self.address

    def run(self) -> None:
        """Start (unless started) and supervise until ``SIGTERM`` / ``SIGINT`` or :meth:`request_stop`.

        Then stops every worker (:meth:`stop`) and returns. In the main
        thread it handles ``SIGTERM`` and ``SIGINT`` (a second one kills the
        workers at once); elsewhere call :meth:`request_stop` to end it.
        Raises :class:`SupervisorError` when it gave up on a worker that
        cannot start (the other workers are stopped first).
        """
        restore = self._install_signals()
        try:
            if not self._started:
                self.start()
            while not self._stop_requested:
                self._step()
        finally:
            try:
                self.stop()
            finally:
                self._restore_signals(restore)

    def poll(self, timeout: float = 0.0) -> None:
        """One supervision step for an embedder that does not call :meth:`run`: wait up to *timeout* s.

        Reaps workers that exited and (re)starts the ones whose backoff is
        over; raises :class:`SupervisorError` when it gives up on one.
        :meth:`run` is this, in a loop, until a signal.
        """
        if not self._started or self._closed:
            raise RuntimeError("the supervisor is not running: start() it first")
        self._step(max_wait=timeout)

    def request_stop(self) -> None:
        """Ask :meth:`run` to stop the workers and return. Safe from a signal handler or another thread."""
        self._stop_requested = True
        self._wake()

    def stop(self, timeout: float | None = None) -> dict[int, int]:
        """Stop every worker: ``SIGTERM`` (each drains), ``SIGKILL`` after *timeout* (default *drain_timeout*).

        Returns each worker index's last exit status (0: drained and exited;
        negative: killed by that signal). Idempotent.
        """
        if timeout is None:
            timeout = self.drain_timeout
        statuses: dict[int, int] = {}
        if self._closed:
            return statuses
        self._stopping = True
        for slot in self._slots:
            slot.due = None
            if slot.pid is not None:
                self._signal(slot, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        killed = False
        while any(s.pid is not None for s in self._slots):
            left = deadline - time.monotonic()
            if (left <= 0 or self._kill_requested) and not killed:
                for slot in self._slots:
                    if slot.pid is not None:
                        log.warning("pushcore supervisor: worker %d (pid %d) still running: SIGKILL",
                                    slot.index, slot.pid)
                        self._signal(slot, signal.SIGKILL)
                killed = True
            for slot, status in self._wait(max(left, 0.0) if not killed else 1.0):
                statuses[slot.index] = status
        self._close()
        return dict(sorted(statuses.items()))

    # -- supervision -----------------------------------------------------------

    def _step(self, max_wait: float = 1.0) -> None:
        """Start what is due, wait (at most *max_wait* s) for an event (a worker's message or exit, a signal)."""
        now = time.monotonic()
        if not self._stopping:
            for slot in self._slots:
                if slot.pid is None and slot.due is not None and slot.due <= now:
                    self._spawn(slot)
        timeout = max_wait
        for slot in self._slots:
            if slot.pid is None and slot.due is not None:
                timeout = min(timeout, max(slot.due - now, 0.0))
            elif slot.pid is not None and not slot.ready:
                left = slot.started_at + self._start_timeout - now
                if left <= 0:
                    slot.message = f"its Server did not listen within {self._start_timeout:g} s"
                    log.error("pushcore supervisor: worker %d (pid %d) %s: SIGKILL",
                              slot.index, slot.pid, slot.message)
                    self._signal(slot, signal.SIGKILL)
                timeout = min(timeout, max(left, 0.0))
        for slot, status in self._wait(timeout):
            self._exited(slot, status)

    def _wait(self, timeout: float) -> list[tuple[_Slot, int]]:
        """Wait up to *timeout* s; read the workers' messages; return the workers that exited."""
        assert self._selector is not None
        exited = []
        for key, _events in self._selector.select(timeout):
            if key.data is None:
                try:
                    while os.read(self._wake_r, 512):
                        pass
                except BlockingIOError:
                    pass
                continue
            slot: _Slot = key.data
            assert slot.sentinel is not None
            try:
                data = os.read(slot.sentinel, 4096)
            except BlockingIOError:
                continue
            if data:
                self._message(slot, data)
                continue
            exited.append((slot, self._reap(slot)))
        return exited

    def _message(self, slot: _Slot, data: bytes) -> None:
        slot.buffer += data
        if not slot.ready and slot.buffer.startswith(_READY):
            slot.ready = True
            slot.ready_at = time.monotonic()
            slot.buffer = slot.buffer[1:]
            log.info("pushcore supervisor: worker %d (pid %d, incarnation %d) listening on %s:%d",
                     slot.index, slot.pid, slot.incarnation, *self.address)
        if slot.buffer.startswith(_FAILED):
            slot.message = slot.buffer[1:].decode("utf-8", "replace").strip()

    def _reap(self, slot: _Slot) -> int:
        """The exited worker's status (its pipe said EOF); forget its process."""
        assert self._selector is not None and slot.pid is not None and slot.sentinel is not None
        self._selector.unregister(slot.sentinel)
        os.close(slot.sentinel)
        slot.sentinel = None
        pid, slot.pid = slot.pid, None
        while True:
            try:
                _, raw = os.waitpid(pid, 0)
                break
            except ChildProcessError:  # reaped elsewhere (a SIGCHLD handler of the embedder)
                raw = 0
                break
            except InterruptedError:  # pragma: no cover - PEP 475 retries
                continue
        status = os.waitstatus_to_exitcode(raw)
        how = f"killed by {signal.Signals(-status).name}" if status < 0 else f"exit status {status}"
        level = logging.INFO if self._stopping and status == 0 else logging.WARNING
        log.log(level, "pushcore supervisor: worker %d (pid %d, incarnation %d) exited: %s",
                slot.index, pid, slot.incarnation, how)
        if not slot.ready and not slot.message:
            slot.message = how
        return status

    def _exited(self, slot: _Slot, status: int) -> None:
        """Schedule the restart of a worker that exited while the supervisor was not stopping."""
        if self._stopping or self._stop_requested:
            return
        now = time.monotonic()
        if not slot.ready:
            slot.failures += 1
            if slot.failures >= self._start_attempts:
                self._stop_requested = True
                raise SupervisorError(
                    f"worker {slot.index} could not start ({slot.failures} attempts in a row; last: "
                    f"{slot.message or 'no reason given'}): giving up")
        else:
            slot.failures = 0
            if now - slot.ready_at >= self._stable_after:
                slot.backoff = self._backoff  # it ran for a while: not a crash loop
        delay = slot.backoff
        slot.backoff = min(slot.backoff * 2, self._max_backoff)
        slot.due = now + delay
        log.warning("pushcore supervisor: restarting worker %d in %.1f s", slot.index, delay)

    def _spawn(self, slot: _Slot) -> None:
        slot.incarnation += 1
        if slot.incarnation:
            slot.restarts += 1
            self.restarts += 1
        info = WorkerInfo(slot.index, self.count, slot.incarnation, self.address[0], self.address[1],
                          dict(self._ports))
        read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the worker
            status = 1
            try:
                os.close(read_fd)
                status = self._worker_main(info, write_fd)
            finally:
                os._exit(status)
        os.close(write_fd)
        os.set_blocking(read_fd, False)
        assert self._selector is not None
        self._selector.register(read_fd, selectors.EVENT_READ, slot)
        slot.pid, slot.sentinel, slot.ready, slot.due = pid, read_fd, False, None
        slot.started_at = time.monotonic()
        slot.message, slot.buffer = "", b""
        log.info("pushcore supervisor: started worker %d (pid %d, incarnation %d)", slot.index, pid,
                 slot.incarnation)

    def _signal(self, slot: _Slot, signum: signal.Signals) -> None:
        if slot.pid is None:
            return
        try:
            os.kill(slot.pid, signum)
        except ProcessLookupError:  # exited; its EOF is on the way
            pass

    # -- the worker process ----------------------------------------------------

    def _worker_main(self, info: WorkerInfo, pipe: int) -> int:
        """In the forked worker: build the Server, run it, tell the supervisor when it listens."""
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, signal.SIG_DFL)  # until the Server listens: die, nothing to drain
        signal.set_wakeup_fd(-1)
        self._forget_parent_fds()
        try:
            _die_with_parent(self._pid)
        except OSError:
            pass
        me = os.getpid()
        ready = False

        def failed(reason: str) -> int:
            if not ready:
                try:
                    os.write(pipe, _FAILED + reason.encode("utf-8", "replace")[:2000])
                except OSError:
                    pass
            return EXIT_STARTUP_FAILED if not ready else 1

        try:
            server = self._make_server(info)
            drain_timeout = max(self.drain_timeout - 1.0, self.drain_timeout / 2)

            def on_ready() -> None:
                nonlocal ready
                if server.address[1] != info.port:
                    raise RuntimeError(f"the factory's Server listens on port {server.address[1]}, not on "
                                       f"the supervisor's port {info.port}")
                _drain_on_signals(server, info, drain_timeout)
                os.write(pipe, _READY)
                ready = True

            server.run(on_ready=on_ready)
        except BaseException as exc:
            reason = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            log.error("pushcore supervisor: worker %d (pid %d) %s: %s", info.index, me,
                      "failed" if ready else "could not start", reason, exc_info=exc)
            return failed(reason)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
        log.info("pushcore supervisor: worker %d (pid %d) stopped", info.index, me)
        return 0

    def _forget_parent_fds(self) -> None:
        """In a new worker: close the supervisor's own descriptors (probes, pipes of the other workers)."""
        for sock in self._probes:
            sock.close()
        for fd in (self._wake_r, self._wake_w, *(s.sentinel for s in self._slots)):
            if fd is not None and fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        if self._selector is not None:
            try:
                self._selector.close()
            except OSError:
                pass

    # -- ports, signals, teardown ---------------------------------------------

    def _reserve_ports(self) -> None:
        wanted = [("device", self._host, self._port),
                  *((name, host, port) for name, (host, port) in self._extra.items())]
        for i, (name, host, port) in enumerate(wanted):
            try:
                sock = _probe(host, port)
            except OSError as exc:
                raise PortUnavailable(name, host, port, exc) from exc
            self._probes.append(sock)
            bound = sock.getsockname()[1]
            if i:
                self._ports[name] = bound
            else:
                self._address = (host, bound)

    def _wake(self) -> None:
        if self._wake_w >= 0:
            try:
                os.write(self._wake_w, b"\0")
            except (BlockingIOError, OSError):
                pass

    def _install_signals(self) -> dict[int, Any] | None:
        if threading.current_thread() is not threading.main_thread():
            return None

        def on_signal(signum: int, _frame: FrameType | None) -> None:
            if self._stop_requested or self._stopping:
                log.warning("pushcore supervisor: signal %d again: killing the workers", signum)
                self._kill_requested = True
            else:
                log.info("pushcore supervisor: signal %d: stopping the workers (each drains)", signum)
            self.request_stop()

        return {signum: signal.signal(signum, on_signal) for signum in (signal.SIGTERM, signal.SIGINT)}

    @staticmethod
    def _restore_signals(previous: dict[int, Any] | None) -> None:
        for signum, handler in (previous or {}).items():
            signal.signal(signum, handler)

    def _close(self) -> None:
        self._closed = True
        if self._selector is not None:
            self._selector.close()
            self._selector = None
        for fd in (self._wake_r, self._wake_w):
            if fd >= 0:
                os.close(fd)
        self._wake_r = self._wake_w = -1
        for sock in self._probes:
            sock.close()
        self._probes.clear()


def _probe(host: str, port: int) -> socket.socket:
    """A socket bound to *host*:*port* with SO_REUSEPORT, not listening: it holds the port for the workers."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


def _die_with_parent(parent: int) -> None:
    """Ask the kernel for SIGTERM when the supervisor dies (Linux ``PR_SET_PDEATHSIG``)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
    if os.getppid() != parent:  # it died before the prctl: nobody will signal
        os.kill(os.getpid(), signal.SIGTERM)


def _drain_on_signals(server: Server, info: WorkerInfo, timeout: float) -> None:
    """In a worker whose Server listens: the first SIGTERM / SIGINT drains it, later ones are ignored."""
    draining = False

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        nonlocal draining
        if draining:
            return
        draining = True
        log.info("pushcore supervisor: worker %d (pid %d): signal %d, draining", info.index, os.getpid(), signum)
        try:
            server.loop.call_soon_threadsafe(server.drain, (), "server shutting down", timeout)
        except RuntimeError:  # the loop closed meanwhile: the worker is stopping anyway
            pass

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, on_signal)

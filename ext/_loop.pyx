"""The C-level connection loop: epoll, per-connection C structs, timers.

One :class:`Loop` owns an epoll fd, listening sockets, outbound connections
and a table of per-connection C structs indexed by fd. Frames are split in C
with the codec's C functions (ext/_frame.pxd); PING is answered in C; frames
that need Python are handed over in one batch per loop turn; output is
coalesced into pooled chunks and written once per turn with writev.
docs/LOOP.md is the user-facing description; the comments here say why.

Layout (as uvloop's loop.pyx): ``_loop.pxd`` declares the C externs, the
constants, the C structs and the fields of :class:`Loop`; the C level is
split by concern into ``ext/loop/*.pxi`` files included below, as
module-level ``cdef`` functions taking the Loop as their first argument
(direct C calls, no vtable); this file keeps the imports and the public
:class:`Loop` class, whose methods are the Python API.

A connection is named by ``cid = (generation << 32) | fd``: the generation of
a table slot is bumped each time the slot is reused, so a cid kept after its
connection closed never reaches the connection that took over its fd.
"""
cimport cython
from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_GET_SIZE
from cpython.ref cimport PyObject, Py_XDECREF, Py_XINCREF
from libc.errno cimport (
    EAGAIN, ECONNABORTED, EINTR, EINVAL, EMFILE, ENFILE, ENOBUFS, ENOMEM, ENXIO, ETIMEDOUT, errno,
)
from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free, malloc, qsort, realloc
from libc.string cimport memcmp, memcpy, memmove, memset
from posix.time cimport CLOCK_MONOTONIC, clock_gettime, timespec
from posix.fcntl cimport O_CLOEXEC, O_NONBLOCK
from posix.unistd cimport close as c_close, read as c_read, write as c_write

from pushcore._frame cimport (
    PC_DEFAULT_MAX_FRAME_SIZE, PC_ERROR, PC_HELLO, PC_MAX_PORT, PC_PING, PC_PING_HEADER, PC_PONG,
    PC_PONG_HEADER, PC_PRIORITY_HIGH, PC_R_AUTH_TIMEOUT, PC_R_CONNECT_FAILED, PC_R_FRAME_TOO_LARGE,
    PC_R_IDLE_TIMEOUT, PC_R_INTERNAL_ERROR, PC_R_NOT_AUTHENTICATED, PC_R_PEER_CLOSED, PC_R_PEER_RESET,
    PC_R_OVERLOADED, PC_R_SLOW_CONSUMER, PC_R_VARINT_OVERRUN,
    decode_body, header_error, parse_length, push_frame, uvarint_size, write_uvarint,
)
from pushcore._pool cimport (
    pc_big_get, pc_chunk_get, pc_chunk_put, pc_chunk_put_list, pc_pool_decay, pc_pool_destroy,
    pc_pool_init, pool_stats_dict,
)

import collections
import heapq
import os
import socket
import threading
import weakref

from pushcore.wire import reason_name


# ----------------------------------------------------------------------------
# constructor defaults (docs/LOOP.md)

DEFAULT_MAX_FRAME_SIZE = PC_DEFAULT_MAX_FRAME_SIZE
DEFAULT_CHUNK_SIZE = 4064      # + its 32-byte header = one 4 KiB page
DEFAULT_CHUNKS_PER_SLAB = 32   # 128 KiB slabs
DEFAULT_MAX_EMPTY_SLABS = 2
SMALL_CHUNK_SIZE = 224         # + header = 256 bytes: the small size class
SMALL_CHUNKS_PER_SLAB = 512    # 128 KiB slabs
DEFAULT_HIGH_WATER = 256 * 1024
DEFAULT_LOW_WATER = 64 * 1024
DEFAULT_WRITE_CAP = 4 * 1024 * 1024
# abuse limits (docs/SECURITY.md)
DEFAULT_PREAUTH_FRAME_MAX = 2048           # a HELLO before authenticate()
DEFAULT_PREAUTH_BUDGET = 16 * 1024 * 1024  # all pre-auth partial-frame buffers
DEFAULT_OUTBOUND_BUDGET = 256 * 1024 * 1024  # all queued output
DEFAULT_CONNECT_RATE = 20000.0             # accepted connections a second, loop-wide
DEFAULT_SOURCE_CONNECT_RATE = 200.0        # ... from one source (IPv4 address, IPv6 /64)


# ----------------------------------------------------------------------------
# the C level, by concern: functions taking the Loop as their first argument
# (direct C calls). Fields, structs and constants are in _loop.pxd.

include "loop/util.pxi"
include "loop/timers.pxi"
include "loop/conn_table.pxi"
include "loop/wheel.pxi"
include "loop/closing.pxi"
include "loop/write_path.pxi"
include "loop/read_path.pxi"
include "loop/sockets.pxi"
include "loop/turn.pxi"


# ----------------------------------------------------------------------------
# the Python API

@cython.final
cdef class Loop:
    """An epoll connection loop with per-connection state in C (docs/LOOP.md)."""

    def __cinit__(self, *, max_frame_size=DEFAULT_MAX_FRAME_SIZE,
                  chunk_size=DEFAULT_CHUNK_SIZE, chunks_per_slab=DEFAULT_CHUNKS_PER_SLAB,
                  max_empty_slabs=DEFAULT_MAX_EMPTY_SLABS,
                  read_buffer_size=65536, read_budget=262144, max_events=1024,
                  close_timeout=5.0, linger=1.0,
                  preauth_frame_max=DEFAULT_PREAUTH_FRAME_MAX, preauth_budget=DEFAULT_PREAUTH_BUDGET,
                  outbound_budget=DEFAULT_OUTBOUND_BUDGET,
                  connect_rate=DEFAULT_CONNECT_RATE, connect_burst=None,
                  source_connect_rate=DEFAULT_SOURCE_CONNECT_RATE, source_connect_burst=None,
                  limit_loopback=False):
        cdef epoll_event ev
        cdef int i
        self.epfd = -1
        self.evfd = -1
        self.sig_rfd = self.sig_wfd = -1
        self.closed = True      # until everything below is in place
        # a partial frame is buffered whole (header + length + body) in a
        # uint32-sized buffer: keep the largest frame well inside that
        if not 0 < max_frame_size <= 2**31:
            raise ValueError("max_frame_size must be in 1 .. 2**31")
        if not 64 <= chunk_size <= 1 << 24 or chunks_per_slab < 1 or max_empty_slabs < 0:
            raise ValueError("chunk_size must be in 64 .. 16 MiB, chunks_per_slab >= 1")
        if not 1024 <= read_buffer_size <= 1 << 24 or read_budget < 1 or max_events < 1:
            raise ValueError("read_buffer_size must be in 1 KiB .. 16 MiB; read_budget, max_events >= 1")
        self.max_frame_size = max_frame_size
        self.close_timeout_ms = timeout_ms(close_timeout, "close_timeout")
        self.linger_ms = timeout_ms(linger, "linger")
        pc_pool_init(&self.pool, chunk_size, chunks_per_slab, max_empty_slabs)
        pc_pool_init(&self.spool, SMALL_CHUNK_SIZE, SMALL_CHUNKS_PER_SLAB, 1)
        self.scratch_size = read_buffer_size
        self.read_budget = min(read_budget, 1 << 30)
        self.max_events = max_events
        self.high_water = DEFAULT_HIGH_WATER
        self.low_water = DEFAULT_LOW_WATER
        self.write_cap = DEFAULT_WRITE_CAP
        self.source_seed = int.from_bytes(os.urandom(8), "little")
        self.set_limits(preauth_frame_max=preauth_frame_max, preauth_budget=preauth_budget,
                        outbound_budget=outbound_budget, connect_rate=connect_rate,
                        connect_burst=connect_burst, source_connect_rate=source_connect_rate,
                        source_connect_burst=source_connect_burst, limit_loopback=limit_loopback)
        self.scratch = <unsigned char*>malloc(self.scratch_size)
        self.events = <epoll_event*>malloc(max_events * sizeof(epoll_event))
        self.iov = <iovec*>malloc(IOV_BATCH * sizeof(iovec))
        self.wheel = <int32_t*>malloc(WHEEL_SLOTS * sizeof(int32_t))
        if not (self.scratch and self.events and self.iov and self.wheel):
            _free_memory(self)
            raise MemoryError()
        for i in range(WHEEL_SLOTS):
            self.wheel[i] = -1
        self.now_ms = monotonic_ms()
        self.now_s = monotonic_s()
        self.cur_tick = self.now_ms // TICK_MS
        self.last_decay = self.now_ms
        self.epfd = epoll_create1(EPOLL_CLOEXEC)
        if self.epfd < 0:
            err = errno
            _free_memory(self)
            raise _oserror(err, "epoll_create1")
        self.evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)
        if self.evfd < 0:
            err = errno
            c_close(self.epfd)
            self.epfd = -1
            _free_memory(self)
            raise _oserror(err, "eventfd")
        ev.events = EPOLLIN
        ev.data.u64 = <uint64_t>K_WAKE << 32
        epoll_ctl(self.epfd, EPOLL_CTL_ADD, self.evfd, &ev)
        self.b_frames = []
        self.b_open = []
        self.b_close = []
        self.b_pause = []
        self.b_resume = []
        self.b_awake = []
        self.callbacks = collections.deque()
        self.threadsafe = collections.deque()
        self.timers = []
        self.lag_turn = -1.0
        self.closed = False
        _live.add(self)

    def __dealloc__(self):
        if not self.closed:
            _teardown(self)

    def close(self, cid=None, int reason=0):
        """``close()``: close the loop: every connection and listener (no
        callbacks), and free all memory. ``close(cid, reason=0)``: graceful close
        of one connection, same as :meth:`close_conn`."""
        if cid is not None:
            return self.close_conn(cid, reason)
        if self.closed:
            return
        if self.in_turn or self.running:
            raise RuntimeError("Loop.close() while the loop is running: call stop() first")
        _teardown(self)
        self.on_frames = self.on_open = self.on_close = None
        self.on_pause = self.on_resume = self.on_awake = None
        self.callbacks.clear()
        self.threadsafe.clear()
        self.timers = []
        self.wakeup = None
        _live.discard(self)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ------------------------------------------------------------------
    # Python API: running

    def run(self):
        """Run turns until :meth:`stop` (the GIL is released while waiting)."""
        _check_open(self)
        if self.running or self.in_turn:
            raise RuntimeError("the Loop is already running")
        self.running = True
        try:
            while True:
                _turn(self, -1.0)
                if self.stopping or self.closed:
                    break
        finally:
            self.running = False
            self.stopping = False

    def run_once(self, timeout=0.0):
        """One turn: wait at most *timeout* seconds (``None`` = until something
        happens) for I/O or a timer, then handle everything that is ready."""
        cdef double t = -1.0 if timeout is None else timeout
        if t < 0 and timeout is not None:
            raise ValueError("timeout must be >= 0 or None")
        _turn(self, t)
        if not self.running:
            self.stopping = False

    def stop(self):
        """Make :meth:`run` return after the current turn. Safe from any thread."""
        cdef uint64_t one = 1
        self.stopping = True
        if self.evfd >= 0:
            c_write(self.evfd, &one, 8)

    def fileno(self):
        """The epoll fd: readable when the loop has I/O to handle (for asyncio)."""
        _check_open(self)
        return self.epfd

    def next_timeout(self):
        """Seconds until the loop needs a turn without I/O (0.0 = now), or None."""
        cdef int w
        _check_open(self)
        _update_time(self)
        w = _wait_ms(self, -1.0)
        if w < 0:
            return None
        return w / 1000.0

    def time(self):
        """The loop's clock (``time.monotonic()`` seconds)."""
        return monotonic_s()

    def flush(self):
        """Write every connection's queued output now instead of at the end of the turn."""
        _check_open(self)
        if self.in_turn:
            _flush_dirty(self)
        else:
            _update_time(self)
            _flush_dirty(self)
            _poke(self)

    def signal_wakeup_fd(self):
        """A file descriptor for ``signal.set_wakeup_fd`` that wakes this loop.

        Python runs a signal handler only between bytecodes; a signal that
        arrives after a turn checked for signals but before ``epoll_wait``
        would otherwise wait for the next event or timer, possibly for ever
        on an idle gateway. Python's C-level handler writes a byte to this
        pipe, epoll returns, and the turn runs the handler. The pipe is made
        on the first call and closed with the loop.
        """
        cdef int fds[2]
        cdef epoll_event ev
        _check_open(self)
        if self.sig_wfd < 0:
            if pipe2(fds, O_NONBLOCK | O_CLOEXEC) < 0:
                raise _oserror(errno, "pipe2")
            ev.events = EPOLLIN
            ev.data.u64 = <uint64_t>K_SIGNAL << 32
            if epoll_ctl(self.epfd, EPOLL_CTL_ADD, fds[0], &ev) < 0:
                err = errno
                c_close(fds[0])
                c_close(fds[1])
                raise _oserror(err, "epoll_ctl")
            self.sig_rfd, self.sig_wfd = fds[0], fds[1]
        return self.sig_wfd

    def _set_wakeup(self, callback):
        """Called (no arguments) when work is queued outside a turn; for drivers."""
        self.wakeup = callback
        self.poked = False

    def set_handlers(self, *, on_frames=None, on_open=None, on_close=None,
                     on_pause=None, on_resume=None, on_awake=None):
        """Set every batch handler at once (``None`` = not called)."""
        self.on_frames = on_frames
        self.on_open = on_open
        self.on_close = on_close
        self.on_pause = on_pause
        self.on_resume = on_resume
        self.on_awake = on_awake

    # ------------------------------------------------------------------
    # Python API: callbacks

    def call_soon(self, callback, *args):
        """Run ``callback(*args)`` in the next turn. Returns a :class:`TimerHandle`."""
        return _call_soon(self, callback, args)

    def call_later(self, delay, callback, *args):
        """Run ``callback(*args)`` after *delay* seconds. Returns a :class:`TimerHandle`."""
        return _call_later(self, delay, callback, args)

    def call_soon_threadsafe(self, callback, *args):
        """:meth:`call_soon` from any thread: wakes the loop through an eventfd."""
        return _call_soon_threadsafe(self, callback, args)

    # ------------------------------------------------------------------
    # Python API: sockets

    def listen(self, host, int port, *, int backlog=1024, reuse_port=False,
               auth_timeout=None, idle_timeout=None):
        """Listen on host:port (port 0 = ephemeral). Returns a listener id.

        ``auth_timeout`` (seconds) turns on the auth gate for accepted
        connections: only one HELLO until :meth:`authenticate`, closed
        AUTH_TIMEOUT when it does not come in time. ``idle_timeout`` is the
        initial idle timeout of accepted connections.
        """
        return _listen(self, host, port, backlog, reuse_port, auth_timeout, idle_timeout)

    def listen_address(self, int lid):
        """``(host, port)`` the listener is bound to."""
        cdef pc_addr a
        cdef char host[64]
        cdef int port = 0, e
        cdef Listener* L = _listener(self, lid)
        e = pc_sock_addr(L.fd, 0, &a)
        if e == 0:
            e = pc_addr_format(&a, host, sizeof(host), &port)
        if e:
            raise _oserror(-e, "getsockname")
        return (host.decode("ascii"), port)

    def unlisten(self, int lid):
        """Stop accepting on a listener and close its socket."""
        cdef Listener* L = _listener(self, lid)
        c_close(L.fd)   # leaves the epoll set with it
        L.fd = -1
        if L.paused:
            L.paused = 0
            self.paused_listeners -= 1

    def connect(self, host, int port, source=None, timeout=None):
        """Start a non-blocking connect. Returns the cid at once.

        Success: ``on_open`` with ``(cid, -1)``; failure (or no connection
        within *timeout* seconds): ``on_close`` with CONNECT_FAILED. Data sent
        before the connection is up waits in its queue. *source*: a local
        host, or ``(host, port)``, to bind first. A host name (here or in
        *source*) is looked up in a resolver thread, never on the loop: the
        connect starts when the address is back (``stats()['resolving']``
        counts the connections waiting; a name that does not resolve fails
        the connect with errno ENXIO).
        """
        return _connect(self, host, port, source, timeout)

    # ------------------------------------------------------------------
    # Python API: per connection

    def send(self, uint64_t cid, data, uint32_t frames=1):
        """Queue encoded bytes (one frame or several) for *cid*; written at the
        end of the turn. Returns False when the connection is gone or closing
        (counted in ``stats()['stale_ops']``) or was just closed SLOW_CONSUMER."""
        cdef Py_buffer view
        cdef int r
        cdef int32_t fd = _find_live(self, cid)
        if fd < 0:
            return False
        if PyBytes_CheckExact(data):
            r = _queue(self, fd, <const unsigned char*>PyBytes_AS_STRING(data),
                       PyBytes_GET_SIZE(data), frames)
        else:
            PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
            try:
                r = _queue(self, fd, <const unsigned char*>view.buf, view.len, frames)
            finally:
                PyBuffer_Release(&view)
        _poke(self)
        return r == 1

    def send_many(self, cids, data, uint32_t frames=1):
        """Queue the same bytes to every cid in *cids* (one C call; encode once).
        Returns how many connections took them; gone ones are skipped."""
        cdef Py_buffer view
        cdef const unsigned char* p
        cdef Py_ssize_t n, i, count
        cdef int queued = 0
        cdef int32_t fd
        cdef uint64_t cid
        cdef bint owned = False
        if PyBytes_CheckExact(data):
            p = <const unsigned char*>PyBytes_AS_STRING(data)
            n = PyBytes_GET_SIZE(data)
        else:
            PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
            owned = True
            p = <const unsigned char*>view.buf
            n = view.len
        try:
            seq = cids if isinstance(cids, (list, tuple)) else list(cids)
            count = len(seq)
            for i in range(count):
                cid = seq[i]
                fd = _find_live(self, cid)
                if fd >= 0:
                    queued += _queue(self, fd, p, n, frames)
        finally:
            if owned:
                PyBuffer_Release(&view)
        _poke(self)
        return queued

    def close_conn(self, uint64_t cid, int reason=0):
        """Graceful close: stop reading, flush queued output, FIN, then
        ``on_close`` with *reason*. False if already gone or closing."""
        if not 0 <= reason <= 255:
            raise ValueError("reason must be in 0..255")
        cdef int32_t fd = _find_live(self, cid)
        if fd < 0:
            return False
        _update_time(self)
        _begin_close(self, fd, reason)
        _poke(self)
        return True

    def abort(self, uint64_t cid, int reason=0):
        """Close at once with RST, dropping queued output; ``on_close`` with *reason*."""
        if not 0 <= reason <= 255:
            raise ValueError("reason must be in 0..255")
        cdef int32_t fd = _find(self, cid)
        if fd < 0 or self.conns[fd].state == S_DEAD:
            self.st.stale_ops += 1
            return False
        _kill(self, fd, reason, True)
        _poke(self)
        return True

    def authenticate(self, uint64_t cid, idle_timeout=None):
        """Lift the auth gate of an accepted connection (after its HELLO was
        accepted) and set its idle timeout (seconds; None keeps the current)."""
        cdef int32_t fd = _find_live(self, cid)
        cdef Conn* c
        if fd < 0:
            return False
        cdef uint32_t ms = timeout_ms(idle_timeout, "idle_timeout")
        c = &self.conns[fd]
        if c.flags & F_UNAUTH:
            _preauth_release(self, c)   # a partial frame left now counts as any other
            c.flags &= ~(F_UNAUTH | F_HELLO | F_DEADLINE)
        if idle_timeout is not None:
            c.idle_ms = ms
        _deadlines_changed(self, fd)
        return True

    def set_idle_timeout(self, uint64_t cid, seconds):
        """Close IDLE_TIMEOUT when nothing is received for *seconds* (None/0 = never)."""
        cdef uint32_t ms = timeout_ms(seconds, "idle_timeout")
        cdef int32_t fd = _find_live(self, cid)
        if fd < 0:
            return False
        self.conns[fd].idle_ms = ms
        _deadlines_changed(self, fd)
        return True

    def set_ping_interval(self, uint64_t cid, seconds):
        """Send PING (from C) whenever the connection was quiet both ways for
        *seconds* (None/0 = never). PONGs are counted in conn_info()."""
        cdef uint32_t ms = timeout_ms(seconds, "ping_interval")
        cdef int32_t fd = _find_live(self, cid)
        if fd < 0:
            return False
        self.conns[fd].ping_ms = ms
        _deadlines_changed(self, fd)
        return True

    def watch_activity(self, uint64_t cid):
        """Report the next frame of any kind (PING included) from *cid* once,
        through ``on_awake``."""
        cdef int32_t fd = _find_live(self, cid)
        if fd < 0:
            return False
        self.conns[fd].flags |= F_WATCH
        return True

    def send_push(self, uint64_t cid, seq, message_id, payload, priority=PC_PRIORITY_HIGH, expiry=0,
                  collapse_key="", topic=""):
        """Encode a PUSH in C (the arguments and checks of ``encode_push``), queue
        it for *cid* and record *seq* as sent: :meth:`sent_seq` becomes
        ``max(sent_seq, seq)``. One call per push instead of encode, send and
        record. Returns False, recording nothing, when the connection is gone
        or closing (counted in ``stats()['stale_ops']``) or was just closed
        SLOW_CONSUMER; bad arguments raise as ``encode_push`` does."""
        return _send_push(self, cid, seq, message_id, payload, priority, expiry, collapse_key, topic)

    def send_pushes(self, cids, seqs, message_ids, payload, priority=PC_PRIORITY_HIGH, expiry=0,
                    collapse_key="", topic="", *, behind=None):
        """:meth:`send_push` for many connections in one C call: item *i* is a PUSH
        with ``seqs[i]`` and ``message_ids[i]`` (one int: the same id for all) on
        ``cids[i]``; *payload* and the other fields are shared. The frames, the
        sent seqs, the counters, watermarks, the slow-consumer cap and the
        outbound budget come out exactly as ``send_push`` called for each item
        in order would make them. Every argument is checked (TypeError /
        ValueError) before anything is queued. Returns the list of indices not
        queued: gone or closing connections (each counted in
        ``stats()['stale_ops']``) and connections this send closed SLOW_CONSUMER.
        With *behind* (a list), an item whose connection's sent seq is not
        ``seqs[i] - 1`` is not sent and its index is appended to *behind*
        (the caller catches that connection up from the store instead)."""
        if behind is not None and not isinstance(behind, list):
            raise TypeError("behind must be a list or None")
        return _send_pushes(self, cids, seqs, message_ids, payload, priority, expiry, collapse_key,
                            topic, behind)

    def sent_seq(self, uint64_t cid):
        """The highest PUSH seq sent on *cid* (0 for a new connection): raised by
        :meth:`send_push`, set by :meth:`set_sent_seq`. Readable until
        ``on_close`` for the cid returned; ValueError for a cid whose slot was freed."""
        return self.conns[_require(self, cid)].sent_seq

    def set_sent_seq(self, uint64_t cid, uint64_t seq):
        """Set *cid*'s sent seq (e.g. to the last seq a device says it has, at HELLO)."""
        self.conns[_require(self, cid)].sent_seq = seq

    def set_label(self, uint64_t cid, label):
        """Keep one object with *cid* (``None`` clears it): the gateway keeps the
        device id here, so no Python table per connection mirrors the C one.
        Dropped when the slot is freed (after ``on_close`` for the cid ran)."""
        cdef Conn* c = &self.conns[_require(self, cid)]
        cdef PyObject* old = c.label
        if label is None:
            c.label = NULL
        else:
            Py_XINCREF(<PyObject*>label)
            c.label = <PyObject*>label
        Py_XDECREF(old)

    def label(self, uint64_t cid):
        """The object set by :meth:`set_label`, or ``None`` (also for a cid whose slot
        was freed: it is looked up per frame, so it never raises)."""
        cdef int32_t fd = _find(self, cid)
        if fd < 0 or self.conns[fd].label == NULL:
            return None
        return <object>self.conns[fd].label

    def is_open(self, uint64_t cid):
        """True while *cid* is connecting or open (not closing, not closed)."""
        cdef int32_t fd = _find(self, cid)
        return fd >= 0 and (self.conns[fd].state == S_OPEN or self.conns[fd].state == S_CONNECTING)

    def set_write_limits(self, high=None, low=None, cap=None):
        """Loop-wide output watermarks in bytes: above *high* -> on_pause, back to
        *low* or under -> on_resume, over *cap* -> closed SLOW_CONSUMER."""
        cdef uint64_t hi = self.high_water if high is None else high
        cdef uint64_t lo = self.low_water if low is None else low
        cdef uint64_t top = self.write_cap if cap is None else cap
        if not (lo <= hi <= top < 2**31):
            raise ValueError("need low <= high <= cap < 2**31")
        self.high_water, self.low_water, self.write_cap = hi, lo, top

    def get_write_limits(self):
        """``(high, low, cap)``."""
        return (self.high_water, self.low_water, self.write_cap)

    def set_limits(self, *, preauth_frame_max=None, preauth_budget=None, outbound_budget=None,
                   connect_rate=None, connect_burst=None, source_connect_rate=None,
                   source_connect_burst=None, limit_loopback=None):
        """Set the abuse limits (None keeps the current value; docs/SECURITY.md).

        ``preauth_frame_max``: largest frame (body bytes) an auth-gated
        connection may send before :meth:`authenticate` (its HELLO), else
        FRAME_TOO_LARGE. ``preauth_budget``: bytes of partial-frame buffers
        all not-yet-authenticated connections may hold together; a connection
        whose buffer would pass it is closed OVERLOADED, and a new auth-gated
        connection is turned away while one more largest HELLO would not fit
        (0 = no budget). ``outbound_budget``: bytes queued for output, all
        connections together; past it the largest queues are closed
        SLOW_CONSUMER first (0 = no budget). ``connect_rate`` /
        ``source_connect_rate``: accepted connections a second, loop-wide /
        per source address (IPv4 address, IPv6 /64), token buckets of
        ``connect_burst`` / ``source_connect_burst`` (None = one second's
        worth) (0 = no limit); loopback sources are not counted per source
        unless ``limit_loopback``. A connection turned away by a limit gets
        ERROR OVERLOADED and is closed at once, without reaching ``on_open``.
        """
        cdef double rate = self.connect_rate if connect_rate is None else connect_rate
        cdef double srate = self.source_rate if source_connect_rate is None else source_connect_rate
        cdef double burst, sburst
        cdef uint64_t fmax = self.preauth_frame_max if preauth_frame_max is None else preauth_frame_max
        cdef uint64_t pbudget = self.preauth_budget if preauth_budget is None else preauth_budget
        cdef uint64_t obudget = self.outbound_budget if outbound_budget is None else outbound_budget
        if not 0 < fmax <= 2**31:
            raise ValueError(f"preauth_frame_max must be in 1 .. 2**31, got {fmax}")
        if not (rate >= 0 and srate >= 0 and rate < float("inf") and srate < float("inf")):
            raise ValueError("connect_rate and source_connect_rate must be finite and >= 0 (0 = no limit)")
        if connect_burst is not None:
            burst = connect_burst
        elif connect_rate is not None or self.connect_burst == 0:
            burst = max(1.0, rate)
        else:
            burst = self.connect_burst
        if source_connect_burst is not None:
            sburst = source_connect_burst
        elif source_connect_rate is not None or self.source_burst == 0:
            sburst = max(1.0, srate)
        else:
            sburst = self.source_burst
        if not (1.0 <= burst < float("inf") and 1.0 <= sburst < float("inf")):
            raise ValueError("connect_burst and source_connect_burst must be finite and >= 1")
        self.preauth_frame_max = fmax
        self.preauth_budget = pbudget
        self.outbound_budget = obudget
        # the buffer the largest pre-auth frame (header, 5-byte length, body) takes
        fmax = min(fmax, self.max_frame_size) + 6
        if fmax <= self.spool.chunk_size:
            self.preauth_reserve = self.spool.chunk_size
        elif fmax <= self.pool.chunk_size:
            self.preauth_reserve = self.pool.chunk_size
        else:
            self.preauth_reserve = fmax
        if rate != self.connect_rate or burst != self.connect_burst:
            self.connect_bucket.last_ms = 0     # starts full
        self.connect_rate, self.connect_burst = rate, burst
        self.source_rate, self.source_burst = srate, sburst
        if limit_loopback is not None:
            self.limit_loopback = bool(limit_loopback)

    def limits(self):
        """The abuse limits set by :meth:`set_limits`, as a dict of its keywords."""
        return {
            "preauth_frame_max": self.preauth_frame_max,
            "preauth_budget": self.preauth_budget,
            "outbound_budget": self.outbound_budget,
            "connect_rate": self.connect_rate,
            "connect_burst": self.connect_burst,
            "source_connect_rate": self.source_rate,
            "source_connect_burst": self.source_burst,
            "limit_loopback": bool(self.limit_loopback),
        }

    def conn_info(self, uint64_t cid):
        """A dict about one connection, built only when asked."""
        cdef int32_t fd = _require(self, cid)
        cdef Conn* c = &self.conns[fd]
        cdef pc_addr a
        cdef char host[64]
        cdef int port = 0
        peer = local = None
        if pc_sock_addr(fd, 1, &a) == 0 and pc_addr_format(&a, host, sizeof(host), &port) == 0:
            peer = (host.decode("ascii"), port)
        if pc_sock_addr(fd, 0, &a) == 0 and pc_addr_format(&a, host, sizeof(host), &port) == 0:
            local = (host.decode("ascii"), port)
        _update_time(self)
        return {
            "cid": cid,
            "fd": fd,
            "generation": c.gen,
            "state": STATE_NAMES[c.state].decode("ascii"),
            "listener": c.listener,
            "authenticated": not (c.flags & F_UNAUTH),
            "peer": peer,
            "local": local,
            "send_queue_bytes": c.wq_bytes,
            "recv_partial_bytes": c.rbuf.end if c.rbuf != NULL else 0,
            "paused": bool(c.flags & F_PAUSED),
            "bytes_in": c.bytes_in,
            "bytes_out": c.bytes_out,
            "frames_in": c.frames_in,
            "frames_out": c.frames_out,
            "pongs": c.pongs,
            "last_pong_age": ((self.now_ms - widen(self.now_ms, c.last_pong)) / 1000.0
                              if c.pongs else None),
            "idle_for": (self.now_ms - widen(self.now_ms, c.last_rx)) / 1000.0,
            "idle_timeout": c.idle_ms / 1000.0 if c.idle_ms else None,
            "ping_interval": c.ping_ms / 1000.0 if c.ping_ms else None,
            "sent_seq": c.sent_seq,
            "reason": c.reason if c.flags & F_REASON else None,
            "errno": c.err,
        }

    # ------------------------------------------------------------------
    # Python API: counters

    def stats(self):
        """Loop-wide counters (C uint64s, no per-connection work)."""
        cdef int i
        return {
            "open": self.st.open,
            "connecting": self.st.connecting,
            "accepted": self.st.accepted,
            "connected": self.st.connected,
            "closed_total": self.st.closed_total,
            "closed_by_reason": {i: self.st.closed_by_reason[i]
                                 for i in range(256) if self.st.closed_by_reason[i]},
            "errors_by_code": {i: self.st.errors_by_code[i]
                               for i in range(256) if self.st.errors_by_code[i]},
            "bytes_in": self.st.bytes_in,
            "bytes_out": self.st.bytes_out,
            "frames_in": self.st.frames_in,
            "frames_out": self.st.frames_out,
            "pings_answered": self.st.pings_answered,
            "flush_slices": self.st.flush_slices,
            "pongs_received": self.st.pongs_received,
            "pings_sent": self.st.pings_sent,
            "send_queue_bytes": self.st.send_queue_bytes,
            "recv_partial_bytes": self.st.recv_partial_bytes,
            "outbound_bytes": self.st.send_queue_bytes,
            "outbound_budget": self.outbound_budget,
            "outbound_budget_closes": self.st.budget_closes,
            "preauth_bytes": self.st.preauth_bytes,
            "preauth_budget": self.preauth_budget,
            "refused": {
                "connect_rate": self.st.refused[REFUSE_CONNECT_RATE],
                "source_rate": self.st.refused[REFUSE_SOURCE_RATE],
                "preauth_budget": self.st.refused[REFUSE_PREAUTH_BUDGET],
            },
            "pauses": self.st.pauses,
            "resumes": self.st.resumes,
            "callback_errors": self.st.callback_errors,
            "stale_ops": self.st.stale_ops,
            "accept_errors": self.st.accept_errors,
            "accept_paused": self.st.accept_paused,
            "reads": self.st.reads,
            "writes": self.st.writes,
            "write_would_block": self.st.write_would_block,
            "turns": self.st.turns,
            "timers_armed": self.wheel_count,
            "resolving": self.resolving,
            "lag": _lag_stats(self),
        }

    def pool_stats(self):
        """The chunk pools' counters: the page-sized class at the top level, with
        ``in_use``/``free``/``total_allocated``/``slabs``/``empty_slabs`` summed
        over both classes, and the small class under ``"small"``."""
        d = pool_stats_dict(&self.pool)
        small = pool_stats_dict(&self.spool)
        for key in ("in_use", "free", "total_allocated", "slabs", "empty_slabs",
                    "acquired", "slabs_released"):
            d[key] += small[key]
        d["small"] = small
        return d

    @staticmethod
    def sizeof_conn():
        """Bytes of the per-connection C struct (the idle-memory budget)."""
        return sizeof(Conn)

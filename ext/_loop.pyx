"""The C-level connection loop: epoll, per-connection C structs, timers.

One :class:`Loop` owns an epoll fd, listening sockets, outbound connections
and a table of per-connection C structs indexed by fd. Frames are split in C
with the codec's C functions (ext/_frame.pxd); PING is answered in C; frames
that need Python are handed over in one batch per loop turn; output is
coalesced into pooled chunks and written once per turn with writev.
docs/LOOP.md is the user-facing description; the comments here say why.

A connection is named by ``cid = (generation << 32) | fd``: the generation of
a table slot is bumped each time the slot is reused, so a cid kept after its
connection closed never reaches the connection that took over its fd.
"""
cimport cython
from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_GET_SIZE
from cpython.ref cimport PyObject, Py_XDECREF
from libc.errno cimport (
    EAGAIN, ECONNABORTED, EINTR, EINVAL, EMFILE, ENFILE, ENOBUFS, ENOMEM, ETIMEDOUT, errno,
)
from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free, malloc, realloc
from libc.string cimport memcpy, memset, strerror
from posix.time cimport CLOCK_MONOTONIC, clock_gettime, timespec
from posix.unistd cimport close as c_close, read as c_read, write as c_write

from pushcore._frame cimport (
    PC_DEFAULT_MAX_FRAME_SIZE, PC_ERROR, PC_HELLO, PC_PING, PC_PING_HEADER, PC_PONG, PC_PONG_HEADER,
    PC_R_AUTH_TIMEOUT, PC_R_CONNECT_FAILED, PC_R_FRAME_TOO_LARGE, PC_R_IDLE_TIMEOUT,
    PC_R_INTERNAL_ERROR, PC_R_NOT_AUTHENTICATED, PC_R_PEER_CLOSED, PC_R_PEER_RESET,
    PC_R_SLOW_CONSUMER, PC_R_VARINT_OVERRUN,
    decode_body, header_error, parse_length, write_uvarint,
)
from pushcore._pool cimport (
    pc_chunk, pc_chunk_get, pc_big_get, pc_chunk_put, pc_chunk_put_list, pc_pool,
    pc_pool_decay, pc_pool_destroy, pc_pool_init, pool_stats_dict,
)

import collections
import heapq
import os
import socket
import weakref

from pushcore.wire import reason_name


cdef extern from "Python.h":
    PyObject* PyObject_CallOneArg(object callable, object arg)
    PyObject* PyObject_CallNoArgs(object callable)
    PyObject* PyObject_CallObject(object callable, object args)
    int PyErr_CheckSignals_ "PyErr_CheckSignals" ()
    void PyErr_WriteUnraisable(PyObject* obj)
    int PyErr_ExceptionMatches(PyObject* exc)
    PyObject* PyExc_Exception


cdef extern from "<sys/epoll.h>" nogil:
    ctypedef union epoll_data_t:
        void* ptr
        int fd
        uint32_t u32
        uint64_t u64

    struct epoll_event:
        uint32_t events
        epoll_data_t data

    int epoll_create1(int flags)
    int epoll_ctl(int epfd, int op, int fd, epoll_event* event)
    int epoll_wait(int epfd, epoll_event* events, int maxevents, int timeout)
    enum:
        EPOLLIN
        EPOLLOUT
        EPOLLRDHUP
        EPOLLERR
        EPOLLHUP
        EPOLLET
        EPOLL_CTL_ADD
        EPOLL_CTL_MOD
        EPOLL_CTL_DEL
        EPOLL_CLOEXEC


cdef extern from "<sys/eventfd.h>" nogil:
    int eventfd(unsigned int initval, int flags)
    enum:
        EFD_NONBLOCK
        EFD_CLOEXEC


cdef extern from "<sys/uio.h>" nogil:
    struct iovec:
        void* iov_base
        size_t iov_len


cdef extern from "<sys/socket.h>" nogil:
    int shutdown(int fd, int how)
    enum:
        SHUT_WR


cdef extern from "pc_net.h" nogil:
    ctypedef struct pc_addr:
        pass
    int pc_addr_parse(const char* host, int port, pc_addr* a)
    int pc_addr_format(const pc_addr* a, char* host, size_t hostlen, int* port)
    int pc_sock_addr(int fd, int peer, pc_addr* a)
    void pc_set_linger0(int fd)
    int pc_so_error(int fd)
    int pc_listen(const pc_addr* a, int backlog, int reuse_port)
    int pc_accept(int lfd)
    int pc_connect(const pc_addr* a, const pc_addr* src, int* failed)
    ssize_t pc_writev(int fd, iovec* iov, int iovcnt)


# ----------------------------------------------------------------------------
# constants

cdef enum:
    TICK_MS = 10              # timing-wheel resolution
    WHEEL_SLOTS = 4096        # 41 s per revolution; longer deadlines wait rounds
    WHEEL_MASK = WHEEL_SLOTS - 1
    IOV_BATCH = 1024          # Linux IOV_MAX
    LISTENER_RETRY_MS = 100   # back-off after accept() ran out of fds/memory
    POOL_DECAY_MS = 1000      # give back pool slabs unused for this long
    MAX_TIMEOUT_MS = 1000000000   # ~11.6 days: keeps wrap-safe 32-bit ms arithmetic valid

# what an epoll event's data.u64 names (kind << 32 | index)
cdef enum:
    K_CONN = 0
    K_LISTENER = 1
    K_WAKE = 2

# connection states (mutually exclusive)
cdef enum:
    S_FREE = 0        # slot unused (generation kept)
    S_CONNECTING = 1  # outbound connect in progress
    S_OPEN = 2        # established: frames are read
    S_CLOSING = 3     # graceful close: input discarded, output being flushed
    S_LINGER = 4      # FIN sent, on_close reported; input discarded until EOF or linger
    S_DEAD = 5        # fd closed and slot freed at the end of the turn

# connection flags
cdef enum:
    F_UNAUTH = 1 << 0     # auth gate on: only one HELLO allowed until authenticate()
    F_HELLO = 1 << 1      # the gate saw its HELLO
    F_DIRTY = 1 << 2      # on the dirty list (output to flush this turn)
    F_READY = 1 << 3      # on the ready list (read budget hit; more input waits)
    F_WANT_OUT = 1 << 4   # the kernel buffer is full; waiting for EPOLLOUT
    F_PAUSED = 1 << 5     # above the high watermark (on_pause reported)
    F_WATCH = 1 << 6      # watch_activity(): report the next frame to on_awake
    F_EOF = 1 << 7        # the peer sent FIN
    F_TIMER = 1 << 8      # linked in the timing wheel
    F_DEADLINE = 1 << 9   # `deadline` is set (auth / connect / close / linger)
    F_NOTIFIED = 1 << 10  # on_close queued
    F_RST = 1 << 11       # close with RST (SO_LINGER 0)
    F_REASON = 1 << 12    # `reason` decided (the first close reason wins)

cdef const char* STATE_NAMES[6]
STATE_NAMES[:] = [b"free", b"connecting", b"open", b"closing", b"linger", b"closed"]

# the heartbeat frames the loop writes itself: a header byte and a zero length
cdef unsigned char PONG_BYTES[2]
PONG_BYTES[:] = [PC_PONG_HEADER, 0]
cdef unsigned char PING_BYTES[2]
PING_BYTES[:] = [PC_PING_HEADER, 0]

DEFAULT_MAX_FRAME_SIZE = PC_DEFAULT_MAX_FRAME_SIZE
DEFAULT_CHUNK_SIZE = 4064      # + its 32-byte header = one 4 KiB page
DEFAULT_CHUNKS_PER_SLAB = 32   # 128 KiB slabs
DEFAULT_MAX_EMPTY_SLABS = 2
SMALL_CHUNK_SIZE = 224         # + header = 256 bytes: the small size class
SMALL_CHUNKS_PER_SLAB = 512    # 128 KiB slabs
DEFAULT_HIGH_WATER = 256 * 1024
DEFAULT_LOW_WATER = 64 * 1024
DEFAULT_WRITE_CAP = 4 * 1024 * 1024


# ----------------------------------------------------------------------------
# C structs

ctypedef struct Conn:
    # one per table slot; slot index == fd. Kept small: an idle connection
    # costs exactly this (plus the kernel's socket), no buffers.
    uint32_t gen          # bumped on each reuse of the slot (cid high half)
    uint32_t flags        # F_*
    uint8_t state         # S_*
    uint8_t reason        # close reason (Reason code)
    uint16_t err          # errno of a failed connect / read / write
    int32_t listener      # listener id, -1 for outbound
    int32_t t_next        # timing-wheel links (fds), valid with F_TIMER
    int32_t t_prev
    uint32_t t_when       # wheel tick (low 32 bits) the timer fires at
    uint32_t deadline     # ms (low 32 bits of monotonic ms), with F_DEADLINE
    uint32_t last_rx      # ms of the last bytes received
    uint32_t last_tx      # ms of the last bytes written (or PING queued)
    uint32_t idle_ms      # close IDLE_TIMEOUT after this long without input (0 = off)
    uint32_t ping_ms      # send PING after this long quiet both ways (0 = off)
    uint32_t last_pong    # ms of the last PONG received
    uint32_t pongs        # PONGs received
    uint32_t wq_bytes     # bytes queued for output
    uint32_t frames_in
    uint32_t frames_out
    pc_chunk* rbuf        # the trailing partial frame (NULL when none)
    pc_chunk* wq_head     # output queue (NULL when drained)
    pc_chunk* wq_tail
    int64_t tag           # free for the user (the server keeps a session index)
    uint64_t bytes_in
    uint64_t bytes_out


ctypedef struct Listener:
    int fd                # -1 once closed
    uint32_t auth_ms      # auth gate + timeout for accepted conns (0 = no gate)
    uint32_t idle_ms      # idle timeout for accepted conns (0 = none)
    int paused            # accept() hit EMFILE & co: disarmed until paused_until
    uint64_t paused_until


ctypedef struct IntVec:
    int32_t* v
    uint32_t n
    uint32_t cap


ctypedef struct Counters:
    uint64_t open               # connections not yet reported closed
    uint64_t connecting
    uint64_t accepted
    uint64_t connected
    uint64_t closed_total
    uint64_t bytes_in
    uint64_t bytes_out
    uint64_t frames_in
    uint64_t frames_out
    uint64_t pings_answered
    uint64_t pongs_received
    uint64_t pings_sent
    uint64_t send_queue_bytes   # sum of every conn's queued output
    uint64_t recv_partial_bytes # sum of every conn's buffered partial frame
    uint64_t callback_errors
    uint64_t turns
    uint64_t stale_ops          # operations on a cid that is gone or closing
    uint64_t accept_errors
    uint64_t accept_paused
    uint64_t reads
    uint64_t writes
    uint64_t write_would_block
    uint64_t pauses
    uint64_t resumes
    uint64_t closed_by_reason[256]
    uint64_t errors_by_code[256]


cdef uint64_t _leaked_chunk_total = 0


cdef inline int vec_push(IntVec* a, int32_t x) except -1:
    cdef int32_t* v
    cdef uint32_t cap
    if a.n == a.cap:
        cap = a.cap * 2 if a.cap else 64
        v = <int32_t*>realloc(a.v, cap * sizeof(int32_t))
        if v == NULL:
            raise MemoryError()
        a.v = v
        a.cap = cap
    a.v[a.n] = x
    a.n += 1
    return 0


cdef inline void vec_swap(IntVec* a, IntVec* b) noexcept:
    cdef IntVec t = a[0]
    a[0] = b[0]
    b[0] = t


cdef inline uint64_t monotonic_ms() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return <uint64_t>ts.tv_sec * 1000 + <uint64_t>(ts.tv_nsec // 1000000)


cdef inline double monotonic_s() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return <double>ts.tv_sec + <double>ts.tv_nsec * 1e-9


cdef inline uint64_t widen(uint64_t now, uint32_t t) noexcept nogil:
    # a 32-bit ms stamp back to 64 bits, assuming it is within 24 days of now
    return now + <uint64_t><int64_t><int32_t>(t - <uint32_t>now)


cdef inline uint32_t timeout_ms(object seconds, str what) except? 0:
    if seconds is None:
        return 0
    cdef double s = seconds
    if not (0.0 <= s <= MAX_TIMEOUT_MS / 1000.0):
        raise ValueError(f"{what} must be between 0 and {MAX_TIMEOUT_MS // 1000} seconds, got {seconds!r}")
    cdef uint32_t ms = <uint32_t>(s * 1000.0 + 0.5)
    if ms == 0 and s > 0:
        ms = 1
    return ms


cdef list _error_frames = [None] * 256


cdef bytes error_frame(int code):
    """The ERROR frame the loop sends for *code*: message = the reason name."""
    cdef bytes frame = _error_frames[code & 0xFF]
    cdef unsigned char buf[96]
    cdef unsigned char body[80]
    cdef int n, m
    if frame is not None:
        return frame
    name = reason_name(code).encode("ascii")
    n = write_uvarint(body, <unsigned long long>code)
    n += write_uvarint(body + n, <unsigned long long>len(name))
    memcpy(body + n, <char*>name, len(name))
    n += len(name)
    buf[0] = PC_ERROR << 4
    m = 1 + write_uvarint(buf + 1, <unsigned long long>n)
    memcpy(buf + m, body, n)
    frame = (<char*>buf)[:m + n]
    _error_frames[code & 0xFF] = frame
    return frame


def _oserror(int err, str what):
    return OSError(err, f"{what}: {os.strerror(err)}")


# ----------------------------------------------------------------------------
# Python-side timers

@cython.final
cdef class TimerHandle:
    """A callback scheduled by :meth:`Loop.call_soon` / :meth:`Loop.call_later`."""

    cdef readonly double when
    cdef object _callback
    cdef tuple _args
    cdef bint _cancelled

    def __cinit__(self, double when, callback, tuple args):
        self.when = when
        self._callback = callback
        self._args = args

    def cancel(self):
        """Do not run the callback (no effect once it ran)."""
        self._cancelled = True
        self._callback = None
        self._args = None

    def cancelled(self):
        return self._cancelled

    def __repr__(self):
        state = "cancelled" if self._cancelled else repr(self._callback)
        return f"<TimerHandle when={self.when:.3f} {state}>"


_live = weakref.WeakSet()


def _live_loops():
    """Loops created and not closed yet (the test suite's leak check)."""
    return [loop for loop in list(_live) if not loop.closed]


def _leaked_chunks():
    """Chunks found still in use when a loop's pool was destroyed, all loops together."""
    return _leaked_chunk_total


def sizeof_conn():
    """Bytes of the per-connection C struct (the idle-memory budget)."""
    return sizeof(Conn)


# ----------------------------------------------------------------------------
# the loop

@cython.final
cdef class Loop:
    """An epoll connection loop with per-connection state in C (docs/LOOP.md)."""

    cdef int epfd
    cdef int evfd
    cdef Conn* conns
    cdef int32_t nconns
    cdef pc_pool pool              # page-sized chunks
    cdef pc_pool spool             # small chunks: the first of a queue, small partial frames
    cdef unsigned char* scratch
    cdef uint32_t scratch_size
    cdef uint32_t read_budget
    cdef epoll_event* events
    cdef int max_events
    cdef iovec* iov
    cdef IntVec dirty
    cdef IntVec ready
    cdef IntVec ready_swap
    cdef IntVec dead
    cdef IntVec dead_swap
    cdef IntVec tmp
    cdef int32_t* wheel
    cdef uint64_t cur_tick
    cdef uint64_t wheel_count
    cdef uint64_t now_ms
    cdef double now_s
    cdef uint64_t last_decay
    cdef Listener* listeners
    cdef int nlisteners
    cdef int paused_listeners
    cdef Counters st
    cdef readonly uint64_t max_frame_size
    cdef uint64_t high_water
    cdef uint64_t low_water
    cdef uint64_t write_cap
    cdef uint32_t close_timeout_ms
    cdef uint32_t linger_ms
    cdef object on_frames, on_open, on_close, on_pause, on_resume, on_awake
    cdef list b_frames, b_open, b_close, b_pause, b_resume, b_awake
    cdef object callbacks          # deque of TimerHandle ready to run
    cdef object threadsafe         # deque filled by call_soon_threadsafe
    cdef list timers               # heap of (when, seq, TimerHandle)
    cdef uint64_t timer_seq
    cdef object wakeup
    cdef bint poked
    cdef bint in_turn
    cdef bint stopping
    cdef readonly bint running
    cdef readonly bint closed
    cdef object __weakref__

    def __cinit__(self, *, max_frame_size=DEFAULT_MAX_FRAME_SIZE,
                  chunk_size=DEFAULT_CHUNK_SIZE, chunks_per_slab=DEFAULT_CHUNKS_PER_SLAB,
                  max_empty_slabs=DEFAULT_MAX_EMPTY_SLABS,
                  read_buffer_size=65536, read_budget=262144, max_events=1024,
                  close_timeout=5.0, linger=1.0):
        cdef epoll_event ev
        cdef int i
        self.epfd = -1
        self.evfd = -1
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
        self.scratch = <unsigned char*>malloc(self.scratch_size)
        self.events = <epoll_event*>malloc(max_events * sizeof(epoll_event))
        self.iov = <iovec*>malloc(IOV_BATCH * sizeof(iovec))
        self.wheel = <int32_t*>malloc(WHEEL_SLOTS * sizeof(int32_t))
        if not (self.scratch and self.events and self.iov and self.wheel):
            self._free_memory()
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
            self._free_memory()
            raise _oserror(err, "epoll_create1")
        self.evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)
        if self.evfd < 0:
            err = errno
            c_close(self.epfd)
            self.epfd = -1
            self._free_memory()
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
        self.closed = False
        _live.add(self)

    def __dealloc__(self):
        if not self.closed:
            self._teardown()

    cdef void _free_memory(self) noexcept:
        free(self.scratch)
        free(self.events)
        free(self.iov)
        free(self.wheel)
        free(self.conns)
        free(self.listeners)
        free(self.dirty.v)
        free(self.ready.v)
        free(self.ready_swap.v)
        free(self.dead.v)
        free(self.dead_swap.v)
        free(self.tmp.v)
        self.scratch = NULL
        self.events = NULL
        self.iov = NULL
        self.wheel = NULL
        self.conns = NULL
        self.listeners = NULL
        self.nconns = 0
        self.nlisteners = 0
        memset(&self.dirty, 0, sizeof(IntVec))
        memset(&self.ready, 0, sizeof(IntVec))
        memset(&self.ready_swap, 0, sizeof(IntVec))
        memset(&self.dead, 0, sizeof(IntVec))
        memset(&self.dead_swap, 0, sizeof(IntVec))
        memset(&self.tmp, 0, sizeof(IntVec))

    cdef void _teardown(self) noexcept:
        # Close every socket without callbacks, free every buffer, then the
        # pool: whatever is still in use then was lost by a bug (a leak).
        global _leaked_chunk_total
        cdef int32_t fd
        cdef int i
        for fd in range(self.nconns):
            if self.conns[fd].state != S_FREE:
                self._drop_buffers(fd)
                c_close(fd)
                self.conns[fd].state = S_FREE
        for i in range(self.nlisteners):
            if self.listeners[i].fd >= 0:
                c_close(self.listeners[i].fd)
                self.listeners[i].fd = -1
        if self.epfd >= 0:
            c_close(self.epfd)
        if self.evfd >= 0:
            c_close(self.evfd)
        self.epfd = self.evfd = -1
        _leaked_chunk_total += pc_pool_destroy(&self.pool)
        _leaked_chunk_total += pc_pool_destroy(&self.spool)
        self._free_memory()
        self.closed = True

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
        self._teardown()
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

    cdef int _check_open(self) except -1:
        if self.closed:
            raise RuntimeError("the Loop is closed")
        return 0

    # ------------------------------------------------------------------
    # connection table and ids

    cdef int _ensure_slot(self, int fd) except -1:
        cdef int32_t cap
        cdef Conn* p
        if fd < self.nconns:
            return 0
        cap = self.nconns * 2 if self.nconns else 1024
        while cap <= fd:
            cap *= 2
        # calloc of a large table maps fresh zero pages: slots never used
        # cost no resident memory.
        p = <Conn*>calloc(cap, sizeof(Conn))
        if p == NULL:
            raise MemoryError()
        if self.conns != NULL:
            memcpy(p, self.conns, self.nconns * sizeof(Conn))
            free(self.conns)
        self.conns = p
        self.nconns = cap
        return 0

    cdef inline uint64_t _cid(self, int32_t fd) noexcept:
        return (<uint64_t>self.conns[fd].gen << 32) | <uint32_t>fd

    cdef inline int32_t _find(self, uint64_t cid) noexcept:
        # the fd of a slot that still holds *cid* (any state but free), else -1
        cdef uint64_t fd = cid & 0xFFFFFFFFu
        if fd >= <uint64_t>self.nconns:
            return -1
        if self.conns[fd].state == S_FREE or self.conns[fd].gen != <uint32_t>(cid >> 32):
            return -1
        return <int32_t>fd

    cdef inline int32_t _find_live(self, uint64_t cid) noexcept:
        # as _find, but only connections still open from Python's point of view
        cdef int32_t fd = self._find(cid)
        if fd < 0:
            self.st.stale_ops += 1
            return -1
        cdef uint8_t s = self.conns[fd].state
        if s != S_OPEN and s != S_CONNECTING:
            self.st.stale_ops += 1
            return -1
        return fd

    cdef int32_t _require(self, uint64_t cid) except -2:
        cdef int32_t fd = self._find(cid)
        if fd < 0:
            raise ValueError(f"connection {cid:#x} is not known to this loop (closed, or a stale id)")
        return fd

    cdef int _init_conn(self, int fd, uint8_t state, int32_t listener) except -1:
        self._ensure_slot(fd)
        cdef Conn* c = &self.conns[fd]
        cdef uint32_t gen = c.gen + 1
        if gen == 0:
            gen = 1
        memset(c, 0, sizeof(Conn))
        c.gen = gen
        c.state = state
        c.listener = listener
        c.last_rx = c.last_tx = <uint32_t>self.now_ms
        return 0

    cdef int _register(self, int fd) except -1:
        cdef epoll_event ev
        # edge-triggered for both directions from the start: EPOLLOUT then
        # costs nothing until a write leaves bytes behind.
        ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET
        ev.data.u64 = <uint32_t>fd
        if epoll_ctl(self.epfd, EPOLL_CTL_ADD, fd, &ev) < 0:
            return errno
        return 0

    # ------------------------------------------------------------------
    # timing wheel: one intrusive node per connection for its earliest
    # deadline. Deadlines that move later (activity) are not re-armed: the
    # node fires early and is re-armed then.

    cdef void _timer_unlink(self, int32_t fd) noexcept:
        cdef Conn* c = &self.conns[fd]
        if not (c.flags & F_TIMER):
            return
        if c.t_prev >= 0:
            self.conns[c.t_prev].t_next = c.t_next
        else:
            self.wheel[c.t_when & WHEEL_MASK] = c.t_next
        if c.t_next >= 0:
            self.conns[c.t_next].t_prev = c.t_prev
        c.flags &= ~F_TIMER
        self.wheel_count -= 1

    cdef void _timer_link(self, int32_t fd, uint32_t tick) noexcept:
        cdef Conn* c = &self.conns[fd]
        cdef uint32_t slot = tick & WHEEL_MASK
        c.t_when = tick
        c.t_prev = -1
        c.t_next = self.wheel[slot]
        if c.t_next >= 0:
            self.conns[c.t_next].t_prev = fd
        self.wheel[slot] = fd
        c.flags |= F_TIMER
        self.wheel_count += 1

    cdef bint _next_deadline(self, Conn* c, uint64_t* out) noexcept:
        cdef bint has = False
        cdef uint64_t best = 0, d
        cdef uint32_t quiet
        if c.flags & F_DEADLINE:
            best = widen(self.now_ms, c.deadline)
            has = True
        if c.state == S_OPEN:
            if c.idle_ms:
                d = widen(self.now_ms, c.last_rx) + c.idle_ms
                if not has or d < best:
                    best = d
                    has = True
            if c.ping_ms:
                quiet = c.last_rx if <int32_t>(c.last_rx - c.last_tx) > 0 else c.last_tx
                d = widen(self.now_ms, quiet) + c.ping_ms
                if not has or d < best:
                    best = d
                    has = True
        out[0] = best
        return has

    cdef void _timer_arm(self, int32_t fd) noexcept:
        cdef Conn* c = &self.conns[fd]
        cdef uint64_t d, tick
        if not self._next_deadline(c, &d):
            self._timer_unlink(fd)
            return
        tick = (d + TICK_MS - 1) // TICK_MS
        if tick <= self.cur_tick:
            tick = self.cur_tick + 1
        if c.flags & F_TIMER:
            if <int32_t>(c.t_when - <uint32_t>tick) <= 0:
                return      # fires earlier and re-checks then
            self._timer_unlink(fd)
        self._timer_link(fd, <uint32_t>tick)

    cdef int64_t _wheel_next_ms(self) noexcept:
        cdef uint64_t i
        if self.wheel_count == 0:
            return -1
        for i in range(1, <uint64_t>WHEEL_SLOTS + 1):
            if self.wheel[(self.cur_tick + i) & WHEEL_MASK] >= 0:
                if (self.cur_tick + i) * TICK_MS <= self.now_ms:
                    return 0
                return <int64_t>((self.cur_tick + i) * TICK_MS - self.now_ms)
        return -1

    cdef int _advance_wheel(self) except -1:
        cdef uint64_t target = self.now_ms // TICK_MS
        cdef uint64_t steps, t
        cdef uint32_t k
        cdef int32_t fd, nxt
        cdef Conn* c
        if target <= self.cur_tick:
            return 0
        steps = target - self.cur_tick
        if steps > WHEEL_SLOTS:
            steps = WHEEL_SLOTS     # a stall: every slot once is enough
        self.cur_tick = target
        t = target - steps + 1
        while t <= target and self.wheel_count:
            fd = self.wheel[t & WHEEL_MASK]
            t += 1
            if fd < 0:
                continue
            # detach the slot first: nodes are re-linked while we walk it
            self.wheel[(t - 1) & WHEEL_MASK] = -1
            self.tmp.n = 0
            while fd >= 0:
                nxt = self.conns[fd].t_next
                self.conns[fd].flags &= ~F_TIMER
                self.wheel_count -= 1
                vec_push(&self.tmp, fd)
                fd = nxt
            for k in range(self.tmp.n):
                fd = self.tmp.v[k]
                c = &self.conns[fd]
                if <int32_t>(c.t_when - <uint32_t>target) > 0:
                    self._timer_link(fd, c.t_when)     # a later round
                else:
                    self._conn_timeout(fd)
        return 0

    cdef int _conn_timeout(self, int32_t fd) except -1:
        cdef Conn* c = &self.conns[fd]
        cdef uint8_t s = c.state
        cdef uint32_t quiet
        if s == S_FREE or s == S_DEAD:
            return 0
        if c.flags & F_DEADLINE and widen(self.now_ms, c.deadline) <= self.now_ms:
            c.flags &= ~F_DEADLINE
            if s == S_CONNECTING:
                c.err = ETIMEDOUT
                return self._kill(fd, PC_R_CONNECT_FAILED, False)
            if s == S_LINGER:
                return self._kill(fd, c.reason, False)
            if s == S_CLOSING:
                return self._kill(fd, c.reason, True)   # could not flush in time
            if c.flags & F_UNAUTH:
                return self._error_close(fd, PC_R_AUTH_TIMEOUT)
        if s == S_OPEN:
            if c.idle_ms and widen(self.now_ms, c.last_rx) + c.idle_ms <= self.now_ms:
                return self._error_close(fd, PC_R_IDLE_TIMEOUT)
            if c.ping_ms:
                quiet = c.last_rx if <int32_t>(c.last_rx - c.last_tx) > 0 else c.last_tx
                if widen(self.now_ms, quiet) + c.ping_ms <= self.now_ms:
                    if not self._queue(fd, PING_BYTES, 2, 1):
                        return 0
                    c = &self.conns[fd]
                    c.last_tx = <uint32_t>self.now_ms
                    self.st.pings_sent += 1
        self._timer_arm(fd)
        return 0

    # ------------------------------------------------------------------
    # closing

    cdef void _drop_buffers(self, int32_t fd) noexcept:
        cdef Conn* c = &self.conns[fd]
        if c.rbuf != NULL:
            self.st.recv_partial_bytes -= c.rbuf.end
            pc_chunk_put(&self.pool, c.rbuf)
            c.rbuf = NULL
        if c.wq_head != NULL:
            pc_chunk_put_list(&self.pool, c.wq_head)
            c.wq_head = c.wq_tail = NULL
        self.st.send_queue_bytes -= c.wq_bytes
        c.wq_bytes = 0

    cdef inline void _set_reason(self, Conn* c, int reason) noexcept:
        if not (c.flags & F_REASON):
            c.reason = <uint8_t>reason
            c.flags |= F_REASON

    cdef int _notify(self, int32_t fd) except -1:
        cdef Conn* c = &self.conns[fd]
        if c.flags & F_NOTIFIED:
            return 0
        c.flags |= F_NOTIFIED
        self.st.open -= 1
        self.st.closed_total += 1
        self.st.closed_by_reason[c.reason] += 1
        self.b_close.append((self._cid(fd), c.reason))
        return 0

    cdef int _kill(self, int32_t fd, int reason, bint rst) except -1:
        """Close now: drop buffers, report, free the slot at the end of the turn."""
        cdef Conn* c = &self.conns[fd]
        if c.state == S_DEAD or c.state == S_FREE:
            return 0
        if c.state == S_CONNECTING:
            self.st.connecting -= 1
        self._drop_buffers(fd)
        self._timer_unlink(fd)
        c.flags &= ~(F_PAUSED | F_WANT_OUT | F_WATCH | F_DEADLINE)
        if rst:
            c.flags |= F_RST
        c.state = S_DEAD
        self._set_reason(c, reason)
        self._notify(fd)
        vec_push(&self.dead, fd)
        return 0

    cdef int _begin_close(self, int32_t fd, int reason) except -1:
        """Graceful close: stop reading frames, flush the output, then FIN."""
        cdef Conn* c = &self.conns[fd]
        if c.state == S_CONNECTING:
            return self._kill(fd, reason, False)
        if c.state != S_OPEN:
            return 0
        self._set_reason(c, reason)
        c.state = S_CLOSING
        if c.rbuf != NULL:
            self.st.recv_partial_bytes -= c.rbuf.end
            pc_chunk_put(&self.pool, c.rbuf)
            c.rbuf = NULL
        c.flags &= ~F_WATCH
        c.deadline = <uint32_t>(self.now_ms + self.close_timeout_ms)
        c.flags |= F_DEADLINE
        self._timer_arm(fd)
        self._mark_dirty(fd)     # the flush step finishes the close
        return 0

    cdef int _finish_close(self, int32_t fd) except -1:
        # output drained: FIN, report, then linger for the peer's FIN so that
        # unread input does not turn our close into an RST that could destroy
        # the last frames (an ERROR, a GOAWAY) before the peer reads them.
        cdef Conn* c = &self.conns[fd]
        shutdown(fd, SHUT_WR)
        self._notify(fd)
        if c.flags & F_EOF or self.linger_ms == 0:
            return self._kill(fd, c.reason, False)
        c.state = S_LINGER
        c.deadline = <uint32_t>(self.now_ms + self.linger_ms)
        c.flags |= F_DEADLINE
        self._timer_arm(fd)
        return 0

    cdef int _error_close(self, int32_t fd, int code) except -1:
        """Close for a protocol/session error: ERROR frame with *code*, flush, close."""
        cdef bytes frame
        if self.conns[fd].state != S_OPEN:
            return 0
        self.st.errors_by_code[code & 0xFF] += 1
        frame = error_frame(code)
        if self._queue(fd, <const unsigned char*>PyBytes_AS_STRING(frame),
                       PyBytes_GET_SIZE(frame), 1):
            self._begin_close(fd, code)
        return 0

    # ------------------------------------------------------------------
    # write path

    cdef inline int _mark_dirty(self, int32_t fd) except -1:
        cdef Conn* c = &self.conns[fd]
        if not (c.flags & F_DIRTY):
            c.flags |= F_DIRTY
            vec_push(&self.dirty, fd)
        return 0

    cdef int _queue(self, int32_t fd, const unsigned char* p, Py_ssize_t n,
                    uint32_t frames) except -1:
        """Append bytes to the connection's output. 1 = queued, 0 = the conn was
        closed instead (over the hard cap, or out of memory)."""
        cdef Conn* c = &self.conns[fd]
        cdef pc_chunk* t = c.wq_tail
        cdef pc_chunk* ch
        cdef Py_ssize_t m, total = n
        if <uint64_t>c.wq_bytes + <uint64_t>n > self.write_cap:
            self._kill(fd, PC_R_SLOW_CONSUMER, True)
            return 0
        # coalesce into the tail chunk first
        if t != NULL and t.end < t.cap and n > 0:
            m = min(<Py_ssize_t>(t.cap - t.end), n)
            memcpy(&t.data[t.end], p, m)
            t.end += <uint32_t>m
            p += m
            n -= m
        while n > 0:
            # an empty queue getting a small write takes a small chunk: a
            # broadcast of one small frame to N connections then costs N x 256
            # bytes while queued, not N pages
            if t == NULL and n <= <Py_ssize_t>self.spool.chunk_size:
                ch = pc_chunk_get(&self.spool)
            else:
                ch = pc_chunk_get(&self.pool)
            if ch == NULL:
                self._kill(fd, PC_R_INTERNAL_ERROR, True)
                return 0
            m = min(<Py_ssize_t>ch.cap, n)
            memcpy(&ch.data[0], p, m)
            ch.end = <uint32_t>m
            if t != NULL:
                t.next = ch
            else:
                c.wq_head = ch
            c.wq_tail = t = ch
            p += m
            n -= m
        c.wq_bytes += <uint32_t>total
        c.frames_out += frames
        self.st.send_queue_bytes += <uint64_t>total
        self.st.frames_out += frames
        self._mark_dirty(fd)
        if c.wq_bytes > self.high_water and not (c.flags & F_PAUSED):
            c.flags |= F_PAUSED
            self.st.pauses += 1
            self.b_pause.append(self._cid(fd))
        return 1

    cdef void _consume_out(self, int32_t fd, Py_ssize_t n) noexcept:
        cdef Conn* c = &self.conns[fd]
        cdef pc_chunk* ch
        cdef uint32_t avail
        c.wq_bytes -= <uint32_t>n
        c.bytes_out += <uint64_t>n
        c.last_tx = <uint32_t>self.now_ms
        self.st.send_queue_bytes -= <uint64_t>n
        self.st.bytes_out += <uint64_t>n
        while n > 0:
            ch = c.wq_head
            avail = ch.end - ch.start
            if <Py_ssize_t>avail <= n:
                n -= avail
                c.wq_head = ch.next
                pc_chunk_put(&self.pool, ch)
            else:
                ch.start += <uint32_t>n
                n = 0
        if c.wq_head == NULL:
            c.wq_tail = NULL

    cdef int _flush(self, int32_t fd) except -1:
        """One writev per call (more only past IOV_MAX chunks); what the kernel
        does not take waits for EPOLLOUT."""
        cdef Conn* c = &self.conns[fd]
        cdef pc_chunk* ch
        cdef int cnt, e
        cdef Py_ssize_t want, n
        while c.wq_head != NULL:
            cnt = 0
            want = 0
            ch = c.wq_head
            while ch != NULL and cnt < IOV_BATCH:
                self.iov[cnt].iov_base = &ch.data[ch.start]
                self.iov[cnt].iov_len = ch.end - ch.start
                want += ch.end - ch.start
                cnt += 1
                ch = ch.next
            n = pc_writev(fd, self.iov, cnt)
            self.st.writes += 1
            if n < 0:
                e = errno
                if e == EINTR:
                    continue
                if e == EAGAIN:
                    c.flags |= F_WANT_OUT
                    self.st.write_would_block += 1
                    break
                c.err = <uint16_t>e
                return self._kill(fd, PC_R_PEER_RESET, False)
            self._consume_out(fd, n)
            if n < want:
                c.flags |= F_WANT_OUT
                self.st.write_would_block += 1
                break
        if c.flags & F_PAUSED and c.wq_bytes <= self.low_water:
            c.flags &= ~F_PAUSED
            self.st.resumes += 1
            self.b_resume.append(self._cid(fd))
        if c.wq_head == NULL and c.state == S_CLOSING:
            return self._finish_close(fd)
        return 0

    cdef int _flush_dirty(self) except -1:
        cdef uint32_t i = 0
        cdef int32_t fd
        cdef Conn* c
        while i < self.dirty.n:
            fd = self.dirty.v[i]
            i += 1
            c = &self.conns[fd]
            if not (c.flags & F_DIRTY):
                continue
            c.flags &= ~F_DIRTY
            if (c.state == S_OPEN or c.state == S_CLOSING) and not (c.flags & F_WANT_OUT):
                self._flush(fd)
        self.dirty.n = 0
        return 0

    # ------------------------------------------------------------------
    # read path

    cdef int _dispatch(self, int32_t fd, unsigned char header, const unsigned char* body,
                       Py_ssize_t n) except -1:
        """One complete frame. 1 = carry on, 0 = the connection is closing."""
        cdef Conn* c = &self.conns[fd]
        cdef unsigned int kind = header >> 4
        cdef int code
        c.frames_in += 1
        self.st.frames_in += 1
        if c.flags & F_WATCH:
            c.flags &= ~F_WATCH
            self.b_awake.append(self._cid(fd))
        if c.flags & F_UNAUTH:
            if kind != PC_HELLO or c.flags & F_HELLO:
                self._error_close(fd, PC_R_NOT_AUTHENTICATED)
                return 0
            c.flags |= F_HELLO
        if n == 0:
            if kind == PC_PING:
                # answered here: a heartbeat never reaches Python
                self.st.pings_answered += 1
                return self._queue(fd, PONG_BYTES, 2, 1)
            if kind == PC_PONG:
                c.pongs += 1
                c.last_pong = <uint32_t>self.now_ms
                self.st.pongs_received += 1
                return 1
        try:
            frame = decode_body(header, body, n)
        except Exception as exc:
            code = PC_R_INTERNAL_ERROR
            try:
                code = int(exc.code)
            except Exception:
                pass
            if not 0 < code < 256:
                code = PC_R_INTERNAL_ERROR
            self._error_close(fd, code)
            return 0
        self.b_frames.append((self._cid(fd), frame))
        return 1

    cdef int _stash(self, int32_t fd, const unsigned char* p, Py_ssize_t m) except -1:
        """Keep a trailing partial frame: a pool chunk, or a big buffer when the
        frame (its length already known) does not fit in one."""
        cdef Conn* c = &self.conns[fd]
        cdef unsigned long long blen = 0
        cdef uint64_t total = 0
        cdef int k = 0
        cdef pc_chunk* ch
        if m >= 2:
            k = parse_length(p + 1, m - 1, &blen)
            if k > 0:
                total = 1 + k + blen
        if total > self.pool.chunk_size:
            ch = pc_big_get(&self.pool, <uint32_t>total)
        elif total > self.spool.chunk_size:
            ch = pc_chunk_get(&self.pool)
        else:   # small, or length not known yet (at most 5 bytes so far)
            ch = pc_chunk_get(&self.spool)
        if ch == NULL:
            return self._kill(fd, PC_R_INTERNAL_ERROR, True)
        memcpy(&ch.data[0], p, m)
        ch.end = <uint32_t>m
        c.rbuf = ch
        self.st.recv_partial_bytes += <uint64_t>m
        return 0

    cdef Py_ssize_t _complete_partial(self, int32_t fd, const unsigned char* p,
                                      Py_ssize_t n) except -2:
        """Feed the buffered partial frame from p[0:n]. Returns the bytes used,
        or -1 when the connection is closing."""
        cdef Conn* c = &self.conns[fd]
        cdef pc_chunk* r = c.rbuf
        cdef pc_chunk* bigger
        cdef unsigned long long blen = 0
        cdef uint64_t total
        cdef Py_ssize_t used = 0, m
        cdef int k
        cdef int ok
        # the header byte was checked when the partial was stashed; complete
        # the length one byte at a time (at most 5)
        while True:
            k = parse_length(&r.data[1], r.end - 1, &blen) if r.end >= 2 else 0
            if k < 0:
                self._error_close(fd, PC_R_VARINT_OVERRUN)
                return -1
            if k > 0:
                break
            if used == n:
                return used
            r.data[r.end] = p[used]
            r.end += 1
            used += 1
            self.st.recv_partial_bytes += 1
        if blen > self.max_frame_size:
            self._error_close(fd, PC_R_FRAME_TOO_LARGE)
            return -1
        total = 1 + k + blen
        if total > r.cap:
            # outgrew its buffer: move to a page-sized chunk, or a big buffer
            if total <= self.pool.chunk_size:
                bigger = pc_chunk_get(&self.pool)
            else:
                bigger = pc_big_get(&self.pool, <uint32_t>total)
            if bigger == NULL:
                self._kill(fd, PC_R_INTERNAL_ERROR, True)
                return -1
            memcpy(&bigger.data[0], &r.data[0], r.end)
            bigger.end = r.end
            pc_chunk_put(&self.pool, r)
            c.rbuf = r = bigger
        m = min(n - used, <Py_ssize_t>(total - r.end))
        memcpy(&r.data[r.end], p + used, m)
        r.end += <uint32_t>m
        used += m
        self.st.recv_partial_bytes += <uint64_t>m
        if r.end < total:
            return used
        # complete: detach first, the frame may close the connection
        c.rbuf = NULL
        self.st.recv_partial_bytes -= r.end
        try:
            ok = self._dispatch(fd, r.data[0], &r.data[1 + k], <Py_ssize_t>blen)
        finally:
            pc_chunk_put(&self.pool, r)
        return used if ok else -1

    cdef int _consume(self, int32_t fd, const unsigned char* p, Py_ssize_t n) except -1:
        """Split p[0:n] (just read) into frames, in place."""
        cdef Py_ssize_t off = 0, rem, used
        cdef unsigned long long blen
        cdef uint64_t total
        cdef unsigned char h
        cdef int e, k
        if self.conns[fd].rbuf != NULL:
            used = self._complete_partial(fd, p, n)
            if used < 0 or self.conns[fd].rbuf != NULL:
                return 0
            off = used
        while off < n:
            rem = n - off
            h = p[off]
            e = header_error(h)
            if e:
                return self._error_close(fd, e)
            if rem < 2:
                break
            k = parse_length(p + off + 1, rem - 1, &blen)
            if k < 0:
                return self._error_close(fd, PC_R_VARINT_OVERRUN)
            if k == 0:
                break
            if blen > self.max_frame_size:
                return self._error_close(fd, PC_R_FRAME_TOO_LARGE)
            total = 1 + k + blen
            if total > <uint64_t>rem:
                break
            if not self._dispatch(fd, h, p + off + 1 + k, <Py_ssize_t>blen):
                return 0
            off += <Py_ssize_t>total
        if off < n:
            return self._stash(fd, p + off, n - off)
        return 0

    cdef int _eof(self, int32_t fd) except -1:
        cdef Conn* c = &self.conns[fd]
        c.flags |= F_EOF
        if c.state == S_OPEN:
            # a FIN in the middle of a frame loses data: a reset, not an orderly close
            return self._begin_close(fd, PC_R_PEER_RESET if c.rbuf != NULL else PC_R_PEER_CLOSED)
        if c.state == S_LINGER:
            return self._kill(fd, c.reason, False)
        return 0    # S_CLOSING: the flush finishes it

    cdef int _read(self, int32_t fd, uint32_t events) except -1:
        """Read until EAGAIN (or a short read) or the per-turn budget."""
        cdef Conn* c = &self.conns[fd]
        cdef Py_ssize_t n
        cdef int64_t budget = self.read_budget
        cdef int e
        cdef bint hup = (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) != 0
        while True:
            n = c_read(fd, self.scratch, self.scratch_size)
            if n > 0:
                self.st.reads += 1
                self.st.bytes_in += <uint64_t>n
                c.bytes_in += <uint64_t>n
                c.last_rx = <uint32_t>self.now_ms
                if c.state == S_OPEN:
                    self._consume(fd, self.scratch, n)
                    c = &self.conns[fd]
                    if c.state == S_DEAD:
                        return 0
                # else closing / lingering: input is read and dropped
                budget -= n
                if <uint32_t>n < self.scratch_size and not hup:
                    return 0    # short read: drained (edge-triggered will tell us of more)
                if budget <= 0:
                    if not (c.flags & F_READY):
                        c.flags |= F_READY
                        vec_push(&self.ready, fd)
                    return 0
            elif n == 0:
                return self._eof(fd)
            else:
                e = errno
                if e == EAGAIN:
                    return 0
                if e == EINTR:
                    continue
                c.err = <uint16_t>e
                return self._kill(fd, PC_R_PEER_RESET, False)

    # ------------------------------------------------------------------
    # events

    cdef int _connect_done(self, int32_t fd) except -1:
        cdef Conn* c = &self.conns[fd]
        cdef int e = pc_so_error(fd)
        if e < 0:
            e = -e
        if e != 0:
            c.err = <uint16_t>e
            return self._kill(fd, PC_R_CONNECT_FAILED, False)
        c.state = S_OPEN
        c.flags &= ~F_DEADLINE
        c.last_rx = c.last_tx = <uint32_t>self.now_ms
        self.st.connecting -= 1
        self.st.connected += 1
        self.b_open.append((self._cid(fd), -1))
        if c.wq_head != NULL:
            self._mark_dirty(fd)
        self._timer_arm(fd)
        return 0

    cdef int _conn_event(self, int32_t fd, uint32_t events) except -1:
        cdef Conn* c = &self.conns[fd]
        if c.state == S_FREE or c.state == S_DEAD:
            return 0
        if c.state == S_CONNECTING:
            if not (events & (EPOLLOUT | EPOLLERR | EPOLLHUP)):
                return 0
            self._connect_done(fd)
            c = &self.conns[fd]
            if c.state != S_OPEN:
                return 0
        if events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR):
            self._read(fd, events)
            c = &self.conns[fd]
        if events & EPOLLOUT and c.flags & F_WANT_OUT and (c.state == S_OPEN or c.state == S_CLOSING):
            c.flags &= ~F_WANT_OUT
            self._mark_dirty(fd)
        return 0

    cdef int _accept(self, int lid) except -1:
        cdef Listener* L = &self.listeners[lid]
        cdef int fd, e
        cdef Conn* c
        cdef epoll_event ev
        while L.fd >= 0:
            fd = pc_accept(L.fd)
            if fd < 0:
                e = -fd
                if e == EAGAIN:
                    return 0
                if e == EINTR or e == ECONNABORTED:
                    continue
                self.st.accept_errors += 1
                if e == EMFILE or e == ENFILE or e == ENOBUFS or e == ENOMEM:
                    # out of fds: stop polling this listener for a while instead
                    # of spinning on a backlog we cannot take from
                    ev.events = 0
                    ev.data.u64 = (<uint64_t>K_LISTENER << 32) | <uint32_t>lid
                    epoll_ctl(self.epfd, EPOLL_CTL_MOD, L.fd, &ev)
                    L.paused = 1
                    L.paused_until = self.now_ms + LISTENER_RETRY_MS
                    self.paused_listeners += 1
                    self.st.accept_paused += 1
                return 0
            try:
                self._init_conn(fd, S_OPEN, lid)
            except MemoryError:
                c_close(fd)
                raise
            L = &self.listeners[lid]
            e = self._register(fd)
            if e:
                c_close(fd)
                self.conns[fd].state = S_FREE
                self.st.accept_errors += 1
                continue
            c = &self.conns[fd]
            c.idle_ms = L.idle_ms
            if L.auth_ms:
                c.flags |= F_UNAUTH | F_DEADLINE
                c.deadline = <uint32_t>(self.now_ms + L.auth_ms)
            self.st.accepted += 1
            self.st.open += 1
            self.b_open.append((self._cid(fd), lid))
            self._timer_arm(fd)
        return 0

    cdef int _resume_listeners(self) except -1:
        cdef epoll_event ev
        cdef int i
        for i in range(self.nlisteners):
            if self.listeners[i].paused and self.listeners[i].paused_until <= self.now_ms:
                self.listeners[i].paused = 0
                self.paused_listeners -= 1
                if self.listeners[i].fd >= 0:
                    ev.events = EPOLLIN
                    ev.data.u64 = (<uint64_t>K_LISTENER << 32) | <uint32_t>i
                    epoll_ctl(self.epfd, EPOLL_CTL_MOD, self.listeners[i].fd, &ev)
        return 0

    # ------------------------------------------------------------------
    # the turn

    cdef bint _has_pending(self):
        return (self.ready.n or self.dirty.n or self.dead.n or self.b_frames or self.b_open
                or self.b_close or self.b_pause or self.b_resume or self.b_awake
                or self.callbacks or self.threadsafe or self.stopping)

    cdef int _wait_ms(self, double timeout) except? -2:
        # -1 = block until an event
        cdef int64_t best = -1, w
        cdef double d
        if self._has_pending():
            return 0
        if timeout >= 0:
            best = <int64_t>(timeout * 1000.0 + 0.999)
        w = self._wheel_next_ms()
        if w >= 0 and (best < 0 or w < best):
            best = w
        if self.timers:
            d = (<TimerHandle>self.timers[0][2]).when - self.now_s
            w = <int64_t>(d * 1000.0 + 0.999) if d > 0 else 0
            if best < 0 or w < best:
                best = w
        if self.paused_listeners and (best < 0 or best > LISTENER_RETRY_MS):
            best = LISTENER_RETRY_MS
        if (self.pool.empty_slabs > self.pool.max_empty_slabs
                or self.spool.empty_slabs > self.spool.max_empty_slabs):
            # cached slabs to give back: wake for the next decay
            w = <int64_t>(self.last_decay + POOL_DECAY_MS) - <int64_t>self.now_ms
            if w < 0:
                w = 0
            if best < 0 or w < best:
                best = w
        if best > 0x7FFFFFFF:
            best = 0x7FFFFFFF
        return <int>best

    cdef inline void _update_time(self) noexcept:
        self.now_ms = monotonic_ms()
        self.now_s = monotonic_s()

    cdef int _call(self, cb, arg) except -1:
        """Call a handler; an Exception is reported through sys.unraisablehook
        and counted, never raised into the loop (BaseException propagates)."""
        cdef PyObject* r = PyObject_CallOneArg(cb, arg)
        if r != NULL:
            Py_XDECREF(r)
            return 0
        if PyErr_ExceptionMatches(PyExc_Exception):
            self.st.callback_errors += 1
            PyErr_WriteUnraisable(<PyObject*>cb)
            return 0
        return -1

    cdef int _call_handle(self, TimerHandle h) except -1:
        cdef PyObject* r
        cb = h._callback
        args = h._args
        h._callback = None
        h._args = None
        if cb is None:
            return 0
        r = PyObject_CallObject(cb, args)
        if r != NULL:
            Py_XDECREF(r)
            return 0
        if PyErr_ExceptionMatches(PyExc_Exception):
            self.st.callback_errors += 1
            PyErr_WriteUnraisable(<PyObject*>cb)
            return 0
        return -1

    cdef int _run_callbacks(self) except -1:
        cdef Py_ssize_t i, n
        cdef TimerHandle h
        while self.threadsafe:
            self.callbacks.append(self.threadsafe.popleft())
        while self.timers and (<TimerHandle>self.timers[0][2]).when <= self.now_s:
            h = heapq.heappop(self.timers)[2]
            if not h._cancelled:
                self.callbacks.append(h)
        # only what is ready now: callbacks scheduling callbacks wait a turn
        n = len(self.callbacks)
        for i in range(n):
            h = self.callbacks.popleft()
            if not h._cancelled:
                self._call_handle(h)
        return 0

    cdef int _deliver(self, int which) except -1:
        # the batch list is swapped out before the call: a handler may queue
        # more items (they go to the next turn)
        cdef list batch
        if which == 0:
            if not self.b_open:
                return 0
            batch, self.b_open = self.b_open, []
            cb = self.on_open
        elif which == 1:
            if not self.b_frames:
                return 0
            batch, self.b_frames = self.b_frames, []
            cb = self.on_frames
        elif which == 2:
            if not self.b_awake:
                return 0
            batch, self.b_awake = self.b_awake, []
            cb = self.on_awake
        elif which == 3:
            if not self.b_pause:
                return 0
            batch, self.b_pause = self.b_pause, []
            cb = self.on_pause
        elif which == 4:
            if not self.b_resume:
                return 0
            batch, self.b_resume = self.b_resume, []
            cb = self.on_resume
        else:
            if not self.b_close:
                return 0
            batch, self.b_close = self.b_close, []
            cb = self.on_close
        if cb is not None:
            self._call(cb, batch)
        return 0

    cdef int _release_dead(self, IntVec* v) except -1:
        cdef uint32_t i
        cdef int32_t fd
        cdef Conn* c
        for i in range(v.n):
            fd = v.v[i]
            c = &self.conns[fd]
            if c.state != S_DEAD:
                continue
            if c.flags & F_RST:
                pc_set_linger0(fd)
            c_close(fd)
            c.state = S_FREE
            c.flags = 0
        v.n = 0
        return 0

    cdef int _turn(self, double timeout) except -1:
        cdef int wait, n, i
        cdef uint64_t data
        cdef uint64_t one
        cdef uint32_t k
        cdef int32_t fd
        if self.in_turn:
            raise RuntimeError("the Loop is already running a turn (run_once() from a callback?)")
        self._check_open()
        self.in_turn = True
        self.poked = False
        try:
            self._update_time()
            wait = self._wait_ms(timeout)
            if wait != 0:
                with nogil:
                    n = epoll_wait(self.epfd, self.events, self.max_events, wait)
            else:
                n = epoll_wait(self.epfd, self.events, self.max_events, 0)
            if n < 0:
                if errno != EINTR:
                    raise _oserror(errno, "epoll_wait")
                n = 0
            self._update_time()
            self.st.turns += 1
            # connections that used up their read budget last turn
            if self.ready.n:
                vec_swap(&self.ready, &self.ready_swap)
                for k in range(self.ready_swap.n):
                    fd = self.ready_swap.v[k]
                    if self.conns[fd].flags & F_READY:
                        self.conns[fd].flags &= ~F_READY
                        if self.conns[fd].state != S_DEAD and self.conns[fd].state != S_FREE:
                            self._read(fd, EPOLLIN)
                self.ready_swap.n = 0
            for i in range(n):
                data = self.events[i].data.u64
                if data >> 32 == K_CONN:
                    self._conn_event(<int32_t>(data & 0xFFFFFFFFu), self.events[i].events)
                elif data >> 32 == K_LISTENER:
                    self._accept(<int>(data & 0xFFFFFFFFu))
                else:
                    c_read(self.evfd, &one, 8)
            if self.wheel_count:
                self._advance_wheel()
            else:
                self.cur_tick = self.now_ms // TICK_MS
            if self.paused_listeners:
                self._resume_listeners()
            if self.now_ms - self.last_decay >= POOL_DECAY_MS:
                pc_pool_decay(&self.pool, self.pool.max_empty_slabs)
                pc_pool_decay(&self.spool, self.spool.max_empty_slabs)
                self.last_decay = self.now_ms
            self._run_callbacks()
            self._deliver(0)    # on_open before the first frames of a new connection
            self._deliver(1)    # on_frames
            self._deliver(2)    # on_awake
            self._flush_dirty()
            self._deliver(3)    # on_pause
            self._deliver(4)    # on_resume
            # slots are freed only after on_close ran, so the handler can still
            # read get_tag()/conn_info() of the cids it is told about
            vec_swap(&self.dead, &self.dead_swap)
            self._deliver(5)    # on_close
            self._release_dead(&self.dead_swap)
        finally:
            self.in_turn = False
        if PyErr_CheckSignals_() < 0:
            return -1
        return 0

    # ------------------------------------------------------------------
    # Python API: running

    def run(self):
        """Run turns until :meth:`stop` (the GIL is released while waiting)."""
        self._check_open()
        if self.running or self.in_turn:
            raise RuntimeError("the Loop is already running")
        self.running = True
        try:
            while True:
                self._turn(-1.0)
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
        self._turn(t)
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
        self._check_open()
        return self.epfd

    def next_timeout(self):
        """Seconds until the loop needs a turn without I/O (0.0 = now), or None."""
        cdef int w
        self._check_open()
        self._update_time()
        w = self._wait_ms(-1.0)
        if w < 0:
            return None
        return w / 1000.0

    def time(self):
        """The loop's clock (``time.monotonic()`` seconds)."""
        return monotonic_s()

    def flush(self):
        """Write every connection's queued output now instead of at the end of the turn."""
        self._check_open()
        if self.in_turn:
            self._flush_dirty()
        else:
            self._update_time()
            self._flush_dirty()
            self._poke()

    cdef inline void _deadlines_changed(self, int32_t fd) noexcept:
        # A timeout of *fd* was set from Python: re-arm its wheel slot against
        # the current time, and poke an attached driver (asyncio) so the new
        # deadline is honoured even though no fd became ready.
        self._update_time()
        self._timer_arm(fd)
        self._poke()

    cdef inline void _poke(self) noexcept:
        # work queued from outside a turn: an attached driver (asyncio) must
        # run a turn soon even though no fd became ready
        if self.in_turn or self.wakeup is None or self.poked:
            return
        self.poked = True
        cdef PyObject* r = PyObject_CallNoArgs(self.wakeup)
        if r == NULL:
            PyErr_WriteUnraisable(<PyObject*>self.wakeup)
        else:
            Py_XDECREF(r)

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
        self._check_open()
        h = TimerHandle(monotonic_s(), callback, args)
        self.callbacks.append(h)
        self._poke()
        return h

    def call_later(self, delay, callback, *args):
        """Run ``callback(*args)`` after *delay* seconds. Returns a :class:`TimerHandle`."""
        self._check_open()
        cdef double d = delay
        if d < 0:
            d = 0
        h = TimerHandle(monotonic_s() + d, callback, args)
        self.timer_seq += 1
        heapq.heappush(self.timers, (h.when, self.timer_seq, h))
        self._poke()
        return h

    def call_soon_threadsafe(self, callback, *args):
        """:meth:`call_soon` from any thread: wakes the loop through an eventfd."""
        cdef uint64_t one = 1
        if self.closed:
            raise RuntimeError("the Loop is closed")
        h = TimerHandle(monotonic_s(), callback, args)
        self.threadsafe.append(h)
        c_write(self.evfd, &one, 8)
        return h

    # ------------------------------------------------------------------
    # Python API: sockets

    cdef int _resolve(self, host, int port, pc_addr* a) except -1:
        cdef bytes h
        if not isinstance(host, str):
            raise TypeError(f"host must be a str, not {type(host).__name__}")
        h = host.encode("ascii", "replace")
        if pc_addr_parse(h, port, a) == 0:
            return 0
        if not 0 <= port <= 65535:
            raise ValueError(f"port must be in 0..65535, got {port}")
        # a name: resolved here, blocking (pass IP literals to avoid it)
        infos = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)
        h = infos[0][4][0].encode("ascii")
        if pc_addr_parse(h, port, a) != 0:
            raise ValueError(f"cannot use address {infos[0][4][0]!r}")
        return 0

    def listen(self, host, int port, *, int backlog=1024, reuse_port=False,
               auth_timeout=None, idle_timeout=None):
        """Listen on host:port (port 0 = ephemeral). Returns a listener id.

        ``auth_timeout`` (seconds) turns on the auth gate for accepted
        connections: only one HELLO until :meth:`authenticate`, closed
        AUTH_TIMEOUT when it does not come in time. ``idle_timeout`` is the
        initial idle timeout of accepted connections.
        """
        cdef pc_addr a
        cdef int fd, lid
        cdef epoll_event ev
        cdef Listener* L
        self._check_open()
        cdef uint32_t auth_ms = timeout_ms(auth_timeout, "auth_timeout")
        cdef uint32_t idle_ms = timeout_ms(idle_timeout, "idle_timeout")
        if auth_timeout is not None and auth_ms == 0:
            raise ValueError("auth_timeout must be > 0 (None = no auth gate)")
        self._resolve(host, port, &a)
        fd = pc_listen(&a, backlog, 1 if reuse_port else 0)
        if fd < 0:
            raise _oserror(-fd, f"listen on {host}:{port}")
        L = <Listener*>realloc(self.listeners, (self.nlisteners + 1) * sizeof(Listener))
        if L == NULL:
            c_close(fd)
            raise MemoryError()
        self.listeners = L
        lid = self.nlisteners
        self.nlisteners += 1
        L = &self.listeners[lid]
        memset(L, 0, sizeof(Listener))
        L.fd = fd
        L.auth_ms = auth_ms
        L.idle_ms = idle_ms
        # level-triggered: a backlog left behind (fd limit) is seen again
        ev.events = EPOLLIN
        ev.data.u64 = (<uint64_t>K_LISTENER << 32) | <uint32_t>lid
        if epoll_ctl(self.epfd, EPOLL_CTL_ADD, fd, &ev) < 0:
            err = errno
            c_close(fd)
            L.fd = -1
            raise _oserror(err, "epoll_ctl")
        return lid

    cdef Listener* _listener(self, int lid) except NULL:
        self._check_open()
        if not 0 <= lid < self.nlisteners or self.listeners[lid].fd < 0:
            raise ValueError(f"no open listener {lid}")
        return &self.listeners[lid]

    def listen_address(self, int lid):
        """``(host, port)`` the listener is bound to."""
        cdef pc_addr a
        cdef char host[64]
        cdef int port = 0, e
        cdef Listener* L = self._listener(lid)
        e = pc_sock_addr(L.fd, 0, &a)
        if e == 0:
            e = pc_addr_format(&a, host, sizeof(host), &port)
        if e:
            raise _oserror(-e, "getsockname")
        return (host.decode("ascii"), port)

    def unlisten(self, int lid):
        """Stop accepting on a listener and close its socket."""
        cdef Listener* L = self._listener(lid)
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
        host, or ``(host, port)``, to bind first.
        """
        cdef pc_addr a, src
        cdef pc_addr* srcp = NULL
        cdef int fd, failed = 0, e
        cdef Conn* c
        self._check_open()
        cdef uint32_t tmo = timeout_ms(timeout, "timeout")
        self._resolve(host, port, &a)
        if source is not None:
            if isinstance(source, tuple):
                self._resolve(source[0], source[1], &src)
            else:
                self._resolve(source, 0, &src)
            srcp = &src
        fd = pc_connect(&a, srcp, &failed)
        if fd < 0:
            raise _oserror(-fd, f"connect to {host}:{port}")
        self._update_time()
        try:
            self._init_conn(fd, S_CONNECTING, -1)
        except MemoryError:
            c_close(fd)
            raise
        e = self._register(fd)
        if e:
            c_close(fd)
            self.conns[fd].state = S_FREE
            raise _oserror(e, "epoll_ctl")
        self.st.open += 1
        self.st.connecting += 1
        cid = self._cid(fd)
        c = &self.conns[fd]
        if failed:
            c.err = <uint16_t>failed
            self._kill(fd, PC_R_CONNECT_FAILED, False)
        elif tmo:
            c.deadline = <uint32_t>(self.now_ms + tmo)
            c.flags |= F_DEADLINE
            self._timer_arm(fd)
        self._poke()
        return cid

    # ------------------------------------------------------------------
    # Python API: per connection

    def send(self, uint64_t cid, data, uint32_t frames=1):
        """Queue encoded bytes (one frame or several) for *cid*; written at the
        end of the turn. Returns False when the connection is gone or closing
        (counted in ``stats()['stale_ops']``) or was just closed SLOW_CONSUMER."""
        cdef Py_buffer view
        cdef int r
        cdef int32_t fd = self._find_live(cid)
        if fd < 0:
            return False
        if PyBytes_CheckExact(data):
            r = self._queue(fd, <const unsigned char*>PyBytes_AS_STRING(data),
                            PyBytes_GET_SIZE(data), frames)
        else:
            PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
            try:
                r = self._queue(fd, <const unsigned char*>view.buf, view.len, frames)
            finally:
                PyBuffer_Release(&view)
        self._poke()
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
                fd = self._find_live(cid)
                if fd >= 0:
                    queued += self._queue(fd, p, n, frames)
        finally:
            if owned:
                PyBuffer_Release(&view)
        self._poke()
        return queued

    def close_conn(self, uint64_t cid, int reason=0):
        """Graceful close: stop reading, flush queued output, FIN, then
        ``on_close`` with *reason*. False if already gone or closing."""
        if not 0 <= reason <= 255:
            raise ValueError("reason must be in 0..255")
        cdef int32_t fd = self._find_live(cid)
        if fd < 0:
            return False
        self._update_time()
        self._begin_close(fd, reason)
        self._poke()
        return True

    def abort(self, uint64_t cid, int reason=0):
        """Close at once with RST, dropping queued output; ``on_close`` with *reason*."""
        if not 0 <= reason <= 255:
            raise ValueError("reason must be in 0..255")
        cdef int32_t fd = self._find(cid)
        if fd < 0 or self.conns[fd].state == S_DEAD:
            self.st.stale_ops += 1
            return False
        self._kill(fd, reason, True)
        self._poke()
        return True

    def authenticate(self, uint64_t cid, idle_timeout=None):
        """Lift the auth gate of an accepted connection (after its HELLO was
        accepted) and set its idle timeout (seconds; None keeps the current)."""
        cdef int32_t fd = self._find_live(cid)
        cdef Conn* c
        if fd < 0:
            return False
        cdef uint32_t ms = timeout_ms(idle_timeout, "idle_timeout")
        c = &self.conns[fd]
        if c.flags & F_UNAUTH:
            c.flags &= ~(F_UNAUTH | F_HELLO | F_DEADLINE)
        if idle_timeout is not None:
            c.idle_ms = ms
        self._deadlines_changed(fd)
        return True

    def set_idle_timeout(self, uint64_t cid, seconds):
        """Close IDLE_TIMEOUT when nothing is received for *seconds* (None/0 = never)."""
        cdef uint32_t ms = timeout_ms(seconds, "idle_timeout")
        cdef int32_t fd = self._find_live(cid)
        if fd < 0:
            return False
        self.conns[fd].idle_ms = ms
        self._deadlines_changed(fd)
        return True

    def set_ping_interval(self, uint64_t cid, seconds):
        """Send PING (from C) whenever the connection was quiet both ways for
        *seconds* (None/0 = never). PONGs are counted in conn_info()."""
        cdef uint32_t ms = timeout_ms(seconds, "ping_interval")
        cdef int32_t fd = self._find_live(cid)
        if fd < 0:
            return False
        self.conns[fd].ping_ms = ms
        self._deadlines_changed(fd)
        return True

    def watch_activity(self, uint64_t cid):
        """Report the next frame of any kind (PING included) from *cid* once,
        through ``on_awake``."""
        cdef int32_t fd = self._find_live(cid)
        if fd < 0:
            return False
        self.conns[fd].flags |= F_WATCH
        return True

    def set_tag(self, uint64_t cid, int64_t tag):
        """Store an integer with the connection (kept until its slot is freed)."""
        cdef int32_t fd = self._require(cid)
        self.conns[fd].tag = tag

    def get_tag(self, uint64_t cid):
        """The integer stored with :meth:`set_tag` (0 by default). Valid until
        ``on_close`` for the cid returned."""
        return self.conns[self._require(cid)].tag

    def is_open(self, uint64_t cid):
        """True while *cid* is connecting or open (not closing, not closed)."""
        cdef int32_t fd = self._find(cid)
        return fd >= 0 and (self.conns[fd].state == S_OPEN or self.conns[fd].state == S_CONNECTING)

    def set_write_limits(self, high=None, low=None, cap=None):
        """Loop-wide output watermarks in bytes: above *high* -> on_pause, back to
        *low* or under -> on_resume, over *cap* -> closed SLOW_CONSUMER."""
        cdef uint64_t h = self.high_water if high is None else high
        cdef uint64_t l = self.low_water if low is None else low
        cdef uint64_t c = self.write_cap if cap is None else cap
        if not (l <= h <= c < 2**31):
            raise ValueError("need low <= high <= cap < 2**31")
        self.high_water, self.low_water, self.write_cap = h, l, c

    def get_write_limits(self):
        """``(high, low, cap)``."""
        return (self.high_water, self.low_water, self.write_cap)

    def conn_info(self, uint64_t cid):
        """A dict about one connection, built only when asked."""
        cdef int32_t fd = self._require(cid)
        cdef Conn* c = &self.conns[fd]
        cdef pc_addr a
        cdef char host[64]
        cdef int port = 0
        peer = local = None
        if pc_sock_addr(fd, 1, &a) == 0 and pc_addr_format(&a, host, sizeof(host), &port) == 0:
            peer = (host.decode("ascii"), port)
        if pc_sock_addr(fd, 0, &a) == 0 and pc_addr_format(&a, host, sizeof(host), &port) == 0:
            local = (host.decode("ascii"), port)
        self._update_time()
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
            "tag": c.tag,
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
            "pongs_received": self.st.pongs_received,
            "pings_sent": self.st.pings_sent,
            "send_queue_bytes": self.st.send_queue_bytes,
            "recv_partial_bytes": self.st.recv_partial_bytes,
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


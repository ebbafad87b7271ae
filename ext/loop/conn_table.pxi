# The connection table: one C struct per fd, named by
# cid = (generation << 32) | fd; slot lookup, setup and registration; freeing
# the loop's memory; the live-loop and leak bookkeeping of the test suite.
# (Included by ext/_loop.pyx.)


cdef const char* STATE_NAMES[6]
STATE_NAMES[:] = [b"free", b"connecting", b"open", b"closing", b"linger", b"closed"]


cdef uint64_t _leaked_chunk_total = 0


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


cdef void _free_memory(Loop self) noexcept:
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
    free(self.sources)
    self.sources = NULL
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


cdef void _teardown(Loop self) noexcept:
    # Close every socket without callbacks, free every buffer, then the
    # pool: whatever is still in use then was lost by a bug (a leak).
    global _leaked_chunk_total
    cdef int32_t fd
    cdef int i
    for fd in range(self.nconns):
        if self.conns[fd].state != S_FREE:
            _drop_buffers(self, fd)
            c_close(fd)
            self.conns[fd].state = S_FREE
            _clear_label(&self.conns[fd])
    for i in range(self.nlisteners):
        if self.listeners[i].fd >= 0:
            c_close(self.listeners[i].fd)
            self.listeners[i].fd = -1
    if self.epfd >= 0:
        c_close(self.epfd)
    if self.evfd >= 0:
        c_close(self.evfd)
    if self.sig_rfd >= 0:
        c_close(self.sig_rfd)
        c_close(self.sig_wfd)
    self.epfd = self.evfd = self.sig_rfd = self.sig_wfd = -1
    _leaked_chunk_total += pc_pool_destroy(&self.pool)
    _leaked_chunk_total += pc_pool_destroy(&self.spool)
    _free_memory(self)
    self.closed = True


cdef int _check_open(Loop self) except -1:
    if self.closed:
        raise RuntimeError("the Loop is closed")
    return 0


cdef int _ensure_slot(Loop self, int fd) except -1:
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


cdef inline uint64_t _cid(Loop self, int32_t fd) noexcept:
    return (<uint64_t>self.conns[fd].gen << 32) | <uint32_t>fd


cdef inline int32_t _find(Loop self, uint64_t cid) noexcept:
    # the fd of a slot that still holds *cid* (any state but free), else -1
    cdef uint64_t fd = cid & 0xFFFFFFFFu
    if fd >= <uint64_t>self.nconns:
        return -1
    if self.conns[fd].state == S_FREE or self.conns[fd].gen != <uint32_t>(cid >> 32):
        return -1
    return <int32_t>fd


cdef inline int32_t _find_live(Loop self, uint64_t cid) noexcept:
    # as _find, but only connections still open from Python's point of view
    cdef int32_t fd = _find(self, cid)
    if fd < 0:
        self.st.stale_ops += 1
        return -1
    cdef uint8_t s = self.conns[fd].state
    if s != S_OPEN and s != S_CONNECTING:
        self.st.stale_ops += 1
        return -1
    return fd


cdef int32_t _require(Loop self, uint64_t cid) except -2:
    cdef int32_t fd = _find(self, cid)
    if fd < 0:
        raise ValueError(f"connection {cid:#x} is not known to this loop (closed, or a stale id)")
    return fd


cdef inline void _clear_label(Conn* c) noexcept:
    # the slot's label is an owned reference (set_label)
    cdef PyObject* label = c.label
    c.label = NULL
    Py_XDECREF(label)


cdef int _init_conn(Loop self, int fd, uint8_t state, int32_t listener) except -1:
    _ensure_slot(self, fd)
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


cdef int _register(Loop self, int fd) except -1:
    cdef epoll_event ev
    # edge-triggered for both directions from the start: EPOLLOUT then
    # costs nothing until a write leaves bytes behind.
    ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET
    ev.data.u64 = <uint32_t>fd
    if epoll_ctl(self.epfd, EPOLL_CTL_ADD, fd, &ev) < 0:
        return errno
    return 0

# The turn: wait in epoll_wait (GIL released), dispatch events, run timers
# and callbacks, hand the batches to Python (one call per handler per turn),
# flush, free closed slots. (Included by ext/_loop.pyx.)


cdef int _conn_event(Loop self, int32_t fd, uint32_t events) except -1:
    cdef Conn* c = &self.conns[fd]
    if c.state == S_FREE or c.state == S_DEAD:
        return 0
    if c.state == S_CONNECTING:
        if not (events & (EPOLLOUT | EPOLLERR | EPOLLHUP)):
            return 0
        _connect_done(self, fd)
        c = &self.conns[fd]
        if c.state != S_OPEN:
            return 0
    if events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR):
        _read(self, fd, events)
        c = &self.conns[fd]
    if events & EPOLLOUT and c.flags & F_WANT_OUT and (c.state == S_OPEN or c.state == S_CLOSING):
        c.flags &= ~F_WANT_OUT
        _mark_dirty(self, fd)
    return 0


cdef bint _has_pending(Loop self):
    return (self.ready.n or self.dirty.n or self.dead.n or self.b_frames or self.b_open
            or self.b_close or self.b_pause or self.b_resume or self.b_awake
            or self.callbacks or self.threadsafe or self.stopping)


cdef int _wait_ms(Loop self, double timeout) except? -2:
    # -1 = block until an event
    cdef int64_t best = -1, w
    cdef double d
    if _has_pending(self):
        return 0
    if timeout >= 0:
        best = <int64_t>(timeout * 1000.0 + 0.999)
    w = _wheel_next_ms(self)
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


cdef inline void _update_time(Loop self) noexcept:
    self.now_ms = monotonic_ms()
    self.now_s = monotonic_s()


cdef int _call(Loop self, cb, arg) except -1:
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


cdef int _deliver(Loop self, int which) except -1:
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
        _call(self, cb, batch)
    return 0


cdef int _turn(Loop self, double timeout) except -1:
    cdef int wait, n, i
    cdef uint64_t data
    cdef uint64_t one
    cdef uint32_t k
    cdef int32_t fd
    if self.in_turn:
        raise RuntimeError("the Loop is already running a turn (run_once() from a callback?)")
    _check_open(self)
    self.in_turn = True
    self.poked = False
    try:
        _update_time(self)
        wait = _wait_ms(self, timeout)
        if wait != 0:
            with nogil:
                n = epoll_wait(self.epfd, self.events, self.max_events, wait)
        else:
            n = epoll_wait(self.epfd, self.events, self.max_events, 0)
        if n < 0:
            if errno != EINTR:
                raise _oserror(errno, "epoll_wait")
            n = 0
        _update_time(self)
        self.st.turns += 1
        # connections that used up their read budget last turn
        if self.ready.n:
            vec_swap(&self.ready, &self.ready_swap)
            for k in range(self.ready_swap.n):
                fd = self.ready_swap.v[k]
                if self.conns[fd].flags & F_READY:
                    self.conns[fd].flags &= ~F_READY
                    if self.conns[fd].state != S_DEAD and self.conns[fd].state != S_FREE:
                        _read(self, fd, EPOLLIN)
            self.ready_swap.n = 0
        for i in range(n):
            data = self.events[i].data.u64
            if data >> 32 == K_CONN:
                _conn_event(self, <int32_t>(data & 0xFFFFFFFFu), self.events[i].events)
            elif data >> 32 == K_LISTENER:
                _accept(self, <int>(data & 0xFFFFFFFFu))
            elif data >> 32 == K_WAKE:
                c_read(self.evfd, &one, 8)
            else:
                _drain_signal_pipe(self)
        if self.wheel_count:
            _advance_wheel(self)
        else:
            self.cur_tick = self.now_ms // TICK_MS
        if self.paused_listeners:
            _resume_listeners(self)
        if self.now_ms - self.last_decay >= POOL_DECAY_MS:
            pc_pool_decay(&self.pool, self.pool.max_empty_slabs)
            pc_pool_decay(&self.spool, self.spool.max_empty_slabs)
            self.last_decay = self.now_ms
        _run_callbacks(self)
        _deliver(self, 0)    # on_open before the first frames of a new connection
        _deliver(self, 1)    # on_frames
        _deliver(self, 2)    # on_awake
        _flush_dirty(self, True)
        _deliver(self, 3)    # on_pause
        _deliver(self, 4)    # on_resume
        # slots are freed only after on_close ran, so the handler can still
        # read sent_seq()/conn_info() of the cids it is told about
        vec_swap(&self.dead, &self.dead_swap)
        _deliver(self, 5)    # on_close
        _release_dead(self, &self.dead_swap)
    finally:
        self.in_turn = False
    if PyErr_CheckSignals_() < 0:
        return -1
    return 0


cdef inline void _poke(Loop self) noexcept:
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


cdef void _drain_signal_pipe(Loop self) noexcept:
    # The bytes are signal numbers; Python's own flags say which handlers to
    # run (PyErr_CheckSignals at the end of the turn). Only empty the pipe.
    cdef unsigned char buf[64]
    while c_read(self.sig_rfd, buf, sizeof(buf)) > 0:
        pass

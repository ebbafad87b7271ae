# The timing wheel: one intrusive node per connection for its earliest
# deadline (auth, idle, ping, connect, close, linger). Deadlines that move
# later (activity) are not re-armed: the node fires early and is re-armed
# then. (Included by ext/_loop.pyx.)


cdef void _timer_unlink(Loop self, int32_t fd) noexcept:
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


cdef void _timer_link(Loop self, int32_t fd, uint32_t tick) noexcept:
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


cdef bint _next_deadline(Loop self, Conn* c, uint64_t* out) noexcept:
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


cdef void _timer_arm(Loop self, int32_t fd) noexcept:
    cdef Conn* c = &self.conns[fd]
    cdef uint64_t d, tick
    if not _next_deadline(self, c, &d):
        _timer_unlink(self, fd)
        return
    tick = (d + TICK_MS - 1) // TICK_MS
    if tick <= self.cur_tick:
        tick = self.cur_tick + 1
    if c.flags & F_TIMER:
        if <int32_t>(c.t_when - <uint32_t>tick) <= 0:
            return      # fires earlier and re-checks then
        _timer_unlink(self, fd)
    _timer_link(self, fd, <uint32_t>tick)


cdef int64_t _wheel_next_ms(Loop self) noexcept:
    cdef uint64_t i
    if self.wheel_count == 0:
        return -1
    for i in range(1, <uint64_t>WHEEL_SLOTS + 1):
        if self.wheel[(self.cur_tick + i) & WHEEL_MASK] >= 0:
            if (self.cur_tick + i) * TICK_MS <= self.now_ms:
                return 0
            return <int64_t>((self.cur_tick + i) * TICK_MS - self.now_ms)
    return -1


cdef int _advance_wheel(Loop self) except -1:
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
                _timer_link(self, fd, c.t_when)     # a later round
            else:
                # due at its tick: how late the loop got to it (loop lag)
                _lag_seen(self, <double>((target - <uint64_t><uint32_t>(<uint32_t>target - c.t_when))
                                         * TICK_MS) / 1000.0)
                _conn_timeout(self, fd)
    return 0


cdef int _conn_timeout(Loop self, int32_t fd) except -1:
    cdef Conn* c = &self.conns[fd]
    cdef uint8_t s = c.state
    cdef uint32_t quiet
    if s == S_FREE or s == S_DEAD:
        return 0
    if c.flags & F_DEADLINE and widen(self.now_ms, c.deadline) <= self.now_ms:
        c.flags &= ~F_DEADLINE
        if s == S_CONNECTING:
            c.err = ETIMEDOUT
            return _kill(self, fd, PC_R_CONNECT_FAILED, False)
        if s == S_LINGER:
            return _kill(self, fd, c.reason, False)
        if s == S_CLOSING:
            return _kill(self, fd, c.reason, True)   # could not flush in time
        if c.flags & F_UNAUTH:
            return _error_close(self, fd, PC_R_AUTH_TIMEOUT)
    if s == S_OPEN:
        if c.idle_ms and widen(self.now_ms, c.last_rx) + c.idle_ms <= self.now_ms:
            return _error_close(self, fd, PC_R_IDLE_TIMEOUT)
        if c.ping_ms:
            quiet = c.last_rx if <int32_t>(c.last_rx - c.last_tx) > 0 else c.last_tx
            if widen(self.now_ms, quiet) + c.ping_ms <= self.now_ms:
                if not _queue(self, fd, PING_BYTES, 2, 1):
                    return 0
                c = &self.conns[fd]
                c.last_tx = <uint32_t>self.now_ms
                self.st.pings_sent += 1
    _timer_arm(self, fd)
    return 0


cdef inline void _deadlines_changed(Loop self, int32_t fd) noexcept:
    # A timeout of *fd* was set from Python: re-arm its wheel slot against
    # the current time, and poke an attached driver (asyncio) so the new
    # deadline is honoured even though no fd became ready.
    _update_time(self)
    _timer_arm(self, fd)
    _poke(self)

# The read path: read into the loop-wide scratch buffer, split frames in
# place with the codec's C functions, answer PING in C, keep only a trailing
# partial frame; the auth gate. (Included by ext/_loop.pyx.)


cdef inline uint64_t _frame_max(Loop self, Conn* c) noexcept:
    # before authenticate() only a HELLO may come, and a HELLO is small: the
    # pre-auth cap keeps an unauthenticated peer from making us buffer 64 KiB
    if c.flags & F_UNAUTH and self.preauth_frame_max < self.max_frame_size:
        return self.preauth_frame_max
    return self.max_frame_size


cdef inline bint _preauth_take(Loop self, Conn* c, pc_chunk* ch) noexcept:
    """Count *ch* (about to become c.rbuf, replacing any current one) against
    the pre-auth budget. False when it does not fit: the caller closes the
    connection OVERLOADED."""
    cdef uint64_t held
    if not (c.flags & F_UNAUTH):
        return True
    # Account even with the budget off (0): set_limits may turn it on or off
    # while this connection holds a buffer, and the release on close must
    # subtract what was added, or the counter wraps.
    held = self.st.preauth_bytes
    if c.flags & F_PREAUTH:
        held -= c.rbuf.cap
    if self.preauth_budget != 0 and held + ch.cap > self.preauth_budget:
        return False
    _preauth_release(self, c)
    self.st.preauth_bytes += ch.cap
    c.flags |= F_PREAUTH
    return True


cdef int _dispatch(Loop self, int32_t fd, unsigned char header, const unsigned char* body,
                   Py_ssize_t n) except -1:
    """One complete frame. 1 = carry on, 0 = the connection is closing."""
    cdef Conn* c = &self.conns[fd]
    cdef unsigned int kind = header >> 4
    cdef int code
    cdef bint idle
    c.frames_in += 1
    self.st.frames_in += 1
    if c.flags & F_WATCH:
        c.flags &= ~F_WATCH
        self.b_awake.append(_cid(self, fd))
    if c.flags & F_UNAUTH:
        if kind != PC_HELLO or c.flags & F_HELLO:
            _error_close(self, fd, PC_R_NOT_AUTHENTICATED)
            return 0
        c.flags |= F_HELLO
    if n == 0:
        if kind == PC_PING:
            # answered here: a heartbeat never reaches Python. With nothing else queued
            # it is written at once, so it does not wait behind this turn's bulk writes.
            self.st.pings_answered += 1
            idle = c.wq_head == NULL and not (c.flags & F_WANT_OUT)
            code = _queue(self, fd, PONG_BYTES, 2, 1)
            if code == 1 and idle:
                _flush(self, fd)
                if self.conns[fd].state == S_DEAD:
                    return 0
            return code
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
        _error_close(self, fd, code)
        return 0
    self.b_frames.append((_cid(self, fd), frame))
    return 1


cdef int _stash(Loop self, int32_t fd, const unsigned char* p, Py_ssize_t m) except -1:
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
        return _kill(self, fd, PC_R_INTERNAL_ERROR, True)
    if not _preauth_take(self, c, ch):
        pc_chunk_put(&self.pool, ch)
        return _error_close(self, fd, PC_R_OVERLOADED)
    memcpy(&ch.data[0], p, m)
    ch.end = <uint32_t>m
    c.rbuf = ch
    self.st.recv_partial_bytes += <uint64_t>m
    return 0


cdef Py_ssize_t _complete_partial(Loop self, int32_t fd, const unsigned char* p,
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
            _error_close(self, fd, PC_R_VARINT_OVERRUN)
            return -1
        if k > 0:
            break
        if used == n:
            return used
        r.data[r.end] = p[used]
        r.end += 1
        used += 1
        self.st.recv_partial_bytes += 1
    if blen > _frame_max(self, c):
        _error_close(self, fd, PC_R_FRAME_TOO_LARGE)
        return -1
    total = 1 + k + blen
    if total > r.cap:
        # outgrew its buffer: move to a page-sized chunk, or a big buffer
        if total <= self.pool.chunk_size:
            bigger = pc_chunk_get(&self.pool)
        else:
            bigger = pc_big_get(&self.pool, <uint32_t>total)
        if bigger == NULL:
            _kill(self, fd, PC_R_INTERNAL_ERROR, True)
            return -1
        if not _preauth_take(self, c, bigger):
            pc_chunk_put(&self.pool, bigger)
            _error_close(self, fd, PC_R_OVERLOADED)     # frees r with its accounting
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
    _preauth_release(self, c)
    c.rbuf = NULL
    self.st.recv_partial_bytes -= r.end
    try:
        ok = _dispatch(self, fd, r.data[0], &r.data[1 + k], <Py_ssize_t>blen)
    finally:
        pc_chunk_put(&self.pool, r)
    return used if ok else -1


cdef int _consume(Loop self, int32_t fd, const unsigned char* p, Py_ssize_t n) except -1:
    """Split p[0:n] (just read) into frames, in place."""
    cdef Py_ssize_t off = 0, rem, used
    cdef unsigned long long blen
    cdef uint64_t total
    cdef unsigned char h
    cdef int e, k
    if self.conns[fd].rbuf != NULL:
        used = _complete_partial(self, fd, p, n)
        if used < 0 or self.conns[fd].rbuf != NULL:
            return 0
        off = used
    while off < n:
        rem = n - off
        h = p[off]
        e = header_error(h)
        if e:
            return _error_close(self, fd, e)
        if rem < 2:
            break
        k = parse_length(p + off + 1, rem - 1, &blen)
        if k < 0:
            return _error_close(self, fd, PC_R_VARINT_OVERRUN)
        if k == 0:
            break
        if blen > _frame_max(self, &self.conns[fd]):
            return _error_close(self, fd, PC_R_FRAME_TOO_LARGE)
        total = 1 + k + blen
        if total > <uint64_t>rem:
            break
        if not _dispatch(self, fd, h, p + off + 1 + k, <Py_ssize_t>blen):
            return 0
        off += <Py_ssize_t>total
    if off < n:
        return _stash(self, fd, p + off, n - off)
    return 0


cdef int _eof(Loop self, int32_t fd) except -1:
    cdef Conn* c = &self.conns[fd]
    c.flags |= F_EOF
    if c.state == S_OPEN:
        # a FIN in the middle of a frame loses data: a reset, not an orderly close
        return _begin_close(self, fd, PC_R_PEER_RESET if c.rbuf != NULL else PC_R_PEER_CLOSED)
    if c.state == S_LINGER:
        return _kill(self, fd, c.reason, False)
    return 0    # S_CLOSING: the flush finishes it


cdef int _read(Loop self, int32_t fd, uint32_t events) except -1:
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
                _consume(self, fd, self.scratch, n)
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
            return _eof(self, fd)
        else:
            e = errno
            if e == EAGAIN:
                return 0
            if e == EINTR:
                continue
            c.err = <uint16_t>e
            return _kill(self, fd, PC_R_PEER_RESET, False)

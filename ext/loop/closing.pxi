# Closing a connection: the first reason wins, one on_close per connection,
# graceful close (flush, FIN, linger) or kill (now, maybe RST), and the
# ERROR frames the loop writes for protocol and session errors.
# (Included by ext/_loop.pyx.)


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


cdef inline void _preauth_release(Loop self, Conn* c) noexcept:
    # the partial-frame buffer stops counting against the pre-auth budget
    # (freed, replaced, or the connection authenticated)
    if c.flags & F_PREAUTH:
        self.st.preauth_bytes -= c.rbuf.cap
        c.flags &= ~F_PREAUTH


cdef inline void _free_rbuf(Loop self, Conn* c) noexcept:
    if c.rbuf != NULL:
        _preauth_release(self, c)
        self.st.recv_partial_bytes -= c.rbuf.end
        pc_chunk_put(&self.pool, c.rbuf)
        c.rbuf = NULL


cdef void _drop_buffers(Loop self, int32_t fd) noexcept:
    cdef Conn* c = &self.conns[fd]
    _free_rbuf(self, c)
    if c.wq_head != NULL:
        pc_chunk_put_list(&self.pool, c.wq_head)
        c.wq_head = c.wq_tail = NULL
    self.st.send_queue_bytes -= c.wq_bytes
    c.wq_bytes = 0


cdef inline void _set_reason(Loop self, Conn* c, int reason) noexcept:
    if not (c.flags & F_REASON):
        c.reason = <uint8_t>reason
        c.flags |= F_REASON


cdef int _notify(Loop self, int32_t fd) except -1:
    cdef Conn* c = &self.conns[fd]
    if c.flags & F_NOTIFIED:
        return 0
    c.flags |= F_NOTIFIED
    self.st.open -= 1
    self.st.closed_total += 1
    self.st.closed_by_reason[c.reason] += 1
    self.b_close.append((_cid(self, fd), c.reason))
    return 0


cdef int _kill(Loop self, int32_t fd, int reason, bint rst) except -1:
    """Close now: drop buffers, report, free the slot at the end of the turn."""
    cdef Conn* c = &self.conns[fd]
    if c.state == S_DEAD or c.state == S_FREE:
        return 0
    if c.state == S_CONNECTING:
        self.st.connecting -= 1
    if c.flags & F_RESOLVING:
        c.flags &= ~F_RESOLVING     # the lookup's answer will find the cid gone
        self.resolving -= 1
    _drop_buffers(self, fd)
    _timer_unlink(self, fd)
    c.flags &= ~(F_PAUSED | F_WANT_OUT | F_WATCH | F_DEADLINE)
    if rst:
        c.flags |= F_RST
    c.state = S_DEAD
    _set_reason(self, c, reason)
    _notify(self, fd)
    vec_push(&self.dead, fd)
    return 0


cdef int _begin_close(Loop self, int32_t fd, int reason) except -1:
    """Graceful close: stop reading frames, flush the output, then FIN."""
    cdef Conn* c = &self.conns[fd]
    if c.state == S_CONNECTING:
        return _kill(self, fd, reason, False)
    if c.state != S_OPEN:
        return 0
    _set_reason(self, c, reason)
    c.state = S_CLOSING
    _free_rbuf(self, c)
    c.flags &= ~F_WATCH
    c.deadline = <uint32_t>(self.now_ms + self.close_timeout_ms)
    c.flags |= F_DEADLINE
    _timer_arm(self, fd)
    _mark_dirty(self, fd)     # the flush step finishes the close
    return 0


cdef int _finish_close(Loop self, int32_t fd) except -1:
    # output drained: FIN, report, then linger for the peer's FIN so that
    # unread input does not turn our close into an RST that could destroy
    # the last frames (an ERROR, a GOAWAY) before the peer reads them.
    cdef Conn* c = &self.conns[fd]
    shutdown(fd, SHUT_WR)
    _notify(self, fd)
    if c.flags & F_EOF or self.linger_ms == 0:
        return _kill(self, fd, c.reason, False)
    c.state = S_LINGER
    c.deadline = <uint32_t>(self.now_ms + self.linger_ms)
    c.flags |= F_DEADLINE
    _timer_arm(self, fd)
    return 0


cdef int _error_close(Loop self, int32_t fd, int code) except -1:
    """Close for a protocol/session error: ERROR frame with *code*, flush, close."""
    cdef bytes frame
    if self.conns[fd].state != S_OPEN:
        return 0
    self.st.errors_by_code[code & 0xFF] += 1
    frame = error_frame(code)
    if _queue(self, fd, <const unsigned char*>PyBytes_AS_STRING(frame),
              PyBytes_GET_SIZE(frame), 1):
        _begin_close(self, fd, code)
    return 0


cdef int _release_dead(Loop self, IntVec* v) except -1:
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
        _clear_label(c)
    v.n = 0
    return 0

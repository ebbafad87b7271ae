# The write path: bytes copied into the connection's pooled output chunks
# (coalesced into the tail chunk), flushed once per turn with one writev per
# connection; watermarks (on_pause / on_resume) and the hard cap.
# (Included by ext/_loop.pyx.)


# the heartbeat frames the loop writes itself: a header byte and a zero length
cdef unsigned char PONG_BYTES[2]
PONG_BYTES[:] = [PC_PONG_HEADER, 0]
cdef unsigned char PING_BYTES[2]
PING_BYTES[:] = [PC_PING_HEADER, 0]


cdef inline int _mark_dirty(Loop self, int32_t fd) except -1:
    cdef Conn* c = &self.conns[fd]
    if not (c.flags & F_DIRTY):
        c.flags |= F_DIRTY
        vec_push(&self.dirty, fd)
    return 0


cdef int _desc_u64(const void* a, const void* b) noexcept nogil:
    cdef uint64_t x = (<const uint64_t*>a)[0], y = (<const uint64_t*>b)[0]
    return -1 if x > y else (1 if x < y else 0)


cdef int _enforce_outbound(Loop self, int32_t fd, Py_ssize_t n) except -1:
    """Output for all connections together would pass the outbound budget
    once *n* more bytes are queued for *fd*: close the connections with the
    largest queues first, SLOW_CONSUMER (RST, their output dropped), until
    the rest and the *n* bytes fit. *fd* competes with its queue counted as
    if the bytes were queued. Each call is one pass over the table and
    closes at least one connection, so a sustained overload costs one pass
    per connection it closes."""
    cdef uint64_t* keys
    cdef uint64_t size, need
    cdef int32_t i, k, count = 0, victim
    cdef Conn* c
    keys = <uint64_t*>malloc(self.nconns * sizeof(uint64_t))
    if keys == NULL:
        raise MemoryError()
    for i in range(self.nconns):
        c = &self.conns[i]
        if c.state != S_OPEN and c.state != S_CLOSING and c.state != S_CONNECTING:
            continue
        size = c.wq_bytes + (<uint64_t>n if i == fd else 0)
        if size:
            keys[count] = (size << 32) | <uint32_t>i
            count += 1
    qsort(keys, count, sizeof(uint64_t), _desc_u64)
    try:
        for k in range(count):
            need = self.st.send_queue_bytes
            if self.conns[fd].state != S_DEAD:
                need += <uint64_t>n
            if need <= self.outbound_budget:
                break
            victim = <int32_t>(keys[k] & 0xFFFFFFFFu)
            self.st.budget_closes += 1
            _kill(self, victim, PC_R_SLOW_CONSUMER, True)
    finally:
        free(keys)
    return 0


cdef int _queue(Loop self, int32_t fd, const unsigned char* p, Py_ssize_t n,
                uint32_t frames) except -1:
    """Append bytes to the connection's output. 1 = queued, 0 = the conn was
    closed instead (over the hard cap, or out of memory)."""
    cdef Conn* c = &self.conns[fd]
    cdef pc_chunk* t = c.wq_tail
    cdef pc_chunk* ch
    cdef Py_ssize_t m, total = n
    if <uint64_t>c.wq_bytes + <uint64_t>n > self.write_cap:
        _kill(self, fd, PC_R_SLOW_CONSUMER, True)
        return 0
    if self.outbound_budget and self.st.send_queue_bytes + <uint64_t>n > self.outbound_budget:
        _enforce_outbound(self, fd, n)
        c = &self.conns[fd]
        if c.state == S_DEAD:
            return 0
        t = c.wq_tail
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
            _kill(self, fd, PC_R_INTERNAL_ERROR, True)
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
    _mark_dirty(self, fd)
    if c.wq_bytes > self.high_water and not (c.flags & F_PAUSED):
        c.flags |= F_PAUSED
        self.st.pauses += 1
        self.b_pause.append(_cid(self, fd))
    return 1


cdef void _consume_out(Loop self, int32_t fd, Py_ssize_t n) noexcept:
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


cdef int _flush(Loop self, int32_t fd) except -1:
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
            return _kill(self, fd, PC_R_PEER_RESET, False)
        _consume_out(self, fd, n)
        if n < want:
            c.flags |= F_WANT_OUT
            self.st.write_would_block += 1
            break
    if c.flags & F_PAUSED and c.wq_bytes <= self.low_water:
        c.flags &= ~F_PAUSED
        self.st.resumes += 1
        self.b_resume.append(_cid(self, fd))
    if c.wq_head == NULL and c.state == S_CLOSING:
        return _finish_close(self, fd)
    return 0


cdef int _flush_dirty(Loop self, bint sliced=False) except -1:
    """Write every dirty connection's output; *sliced*: for at most FLUSH_SLICE_US.

    A sliced flush that runs out of time keeps the rest of the list (their
    F_DIRTY flags stay set) for the next turn, which then does not block
    in epoll_wait: reads, PINGs among them, are handled in between. Each
    connection's own output keeps its order; only when it goes out moves.
    """
    cdef uint32_t i = 0, rest
    cdef int32_t fd
    cdef Conn* c
    cdef uint64_t deadline = monotonic_us() + FLUSH_SLICE_US if sliced else 0
    while i < self.dirty.n:
        if sliced and (i & 63) == 63 and monotonic_us() >= deadline:
            rest = self.dirty.n - i
            memmove(self.dirty.v, self.dirty.v + i, rest * sizeof(int32_t))
            self.dirty.n = rest
            self.st.flush_slices += 1
            return 0
        fd = self.dirty.v[i]
        i += 1
        c = &self.conns[fd]
        if not (c.flags & F_DIRTY):
            continue
        c.flags &= ~F_DIRTY
        if (c.state == S_OPEN or c.state == S_CLOSING) and not (c.flags & F_WANT_OUT):
            _flush(self, fd)
    self.dirty.n = 0
    return 0


cdef bint _send_push(Loop self, uint64_t cid, seq, message_id, payload, priority, expiry,
                     collapse_key, topic) except -1:
    # Encoded first: bad arguments raise whatever the connection's state.
    # The frame is one exact-size bytes object, copied into the queue (the
    # tail chunk when it fits): no Python-level encode or send call.
    cdef unsigned long long s
    cdef bytes frame = push_frame(seq, message_id, payload, priority, expiry, collapse_key, topic, &s)
    cdef int32_t fd = _find_live(self, cid)
    cdef int r
    if fd < 0:
        return False
    r = _queue(self, fd, <const unsigned char*>PyBytes_AS_STRING(frame), PyBytes_GET_SIZE(frame), 1)
    if r == 1 and s > self.conns[fd].sent_seq:
        self.conns[fd].sent_seq = s
    _poke(self)
    return r == 1


cdef int _u64_items(object values, Py_ssize_t n, uint64_t* out, str name) except -1:
    """*values* (a sequence of ints, or one int for all when *name* allows it) into *out*."""
    cdef Py_ssize_t i
    cdef object v
    if n and len(values) != n:
        raise ValueError(f"{name} has {len(values)} items, cids has {n}")
    for i in range(n):
        v = values[i]
        if not isinstance(v, int) or isinstance(v, bool):
            raise TypeError(f"{name}[{i}] must be an int, not {type(v).__name__}")
        if not 0 <= v <= 0xFFFFFFFFFFFFFFFF:
            raise ValueError(f"{name}[{i}] must be in 0 .. 2**64-1, got {v!r}")
        out[i] = <uint64_t>v
    return 0


cdef list _send_pushes(Loop self, cids, seqs, message_ids, payload, priority, expiry,
                       collapse_key, topic, list behind):
    """N PUSH frames (one seq and message id each, the other fields shared) on N
    connections, exactly as N _send_push calls in order would queue them. The
    shared fields are encoded once (with _send_push's checks); each frame is
    then the header, its length, its seq and message id, and the shared tail,
    built in one buffer. Every argument is checked before anything is queued.
    Returns the indices not queued (gone, closing, or closed by this send);
    with *behind* given, an item whose connection's sent seq is not seq - 1 is
    not sent either and its index goes to *behind*."""
    cdef unsigned long long s0, blen
    cdef bytes tmpl = push_frame(0, 0, payload, priority, expiry, collapse_key, topic, &s0)
    cdef const unsigned char* t = <const unsigned char*>PyBytes_AS_STRING(tmpl)
    cdef Py_ssize_t tn = PyBytes_GET_SIZE(tmpl)
    cdef int ls = parse_length(t + 1, tn - 1, &blen)
    # the template's body: seq 0 (one byte), the message id (8 bytes), the shared tail
    cdef const unsigned char* tail = t + 1 + ls + 9
    cdef Py_ssize_t tail_n = <Py_ssize_t>blen - 9
    cdef Py_ssize_t n, i, k
    cdef uint64_t* vals = NULL
    cdef unsigned char* buf = NULL
    cdef unsigned char* p
    cdef uint64_t seq, body, mid = 0
    cdef int32_t fd
    cdef int r
    cdef list skipped = []
    cdef bint shared_mid
    if ls <= 0 or tail_n < 0:
        raise RuntimeError("send_pushes: unexpected PUSH template")   # cannot happen
    cid_seq = cids if isinstance(cids, (list, tuple)) else list(cids)
    n = len(cid_seq)
    shared_mid = isinstance(message_ids, int) and not isinstance(message_ids, bool)
    vals = <uint64_t*>malloc((3 * n + 1) * sizeof(uint64_t))
    buf = <unsigned char*>malloc(1 + 5 + 10 + 8 + tail_n)
    if vals == NULL or buf == NULL:
        free(vals)
        free(buf)
        raise MemoryError()
    try:
        for i in range(n):
            v = cid_seq[i]
            if not isinstance(v, int) or isinstance(v, bool):
                raise TypeError(f"cids[{i}] must be an int, not {type(v).__name__}")
            if not 0 <= v <= 0xFFFFFFFFFFFFFFFF:
                raise OverflowError(f"cids[{i}] must be in 0 .. 2**64-1, got {v!r}")
            vals[i] = <uint64_t>v
        _u64_items(seqs if isinstance(seqs, (list, tuple)) else list(seqs), n, vals + n, "seqs")
        if shared_mid:
            if not 0 <= message_ids <= 0xFFFFFFFFFFFFFFFF:
                raise ValueError(f"message_ids must be in 0 .. 2**64-1, got {message_ids!r}")
            mid = <uint64_t>message_ids
        else:
            _u64_items(message_ids if isinstance(message_ids, (list, tuple)) else list(message_ids),
                       n, vals + 2 * n, "message_ids")
        buf[0] = t[0]
        for i in range(n):
            fd = _find_live(self, vals[i])
            if fd < 0:
                skipped.append(i)
                continue
            seq = vals[n + i]
            if behind is not None and self.conns[fd].sent_seq + 1 != seq:
                behind.append(i)
                continue
            if not shared_mid:
                mid = vals[2 * n + i]
            body = <uint64_t>uvarint_size(seq) + 8 + <uint64_t>tail_n
            p = buf + 1
            p += write_uvarint(p, body)
            p += write_uvarint(p, seq)
            for k in range(8):
                p[k] = <unsigned char>(mid >> (8 * k))
            p += 8
            memcpy(p, tail, tail_n)
            r = _queue(self, fd, buf, (p - buf) + tail_n, 1)
            if r == 1:
                if seq > self.conns[fd].sent_seq:
                    self.conns[fd].sent_seq = seq
            else:
                skipped.append(i)
    finally:
        free(vals)
        free(buf)
    _poke(self)
    return skipped

# Sockets: address resolution, listeners (accept, back-off when out of
# fds), outbound connect completion. (Included by ext/_loop.pyx.)


cdef int _resolve(Loop self, host, int port, pc_addr* a) except -1:
    cdef bytes h
    if not isinstance(host, str):
        raise TypeError(f"host must be a str, not {type(host).__name__}")
    h = host.encode("ascii", "replace")
    if pc_addr_parse(h, port, a) == 0:
        return 0
    if not 0 <= port <= PC_MAX_PORT:
        raise ValueError(f"port must be in 0..65535, got {port}")
    # a name: resolved here, blocking (pass IP literals to avoid it)
    infos = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)
    h = infos[0][4][0].encode("ascii")
    if pc_addr_parse(h, port, a) != 0:
        raise ValueError(f"cannot use address {infos[0][4][0]!r}")
    return 0


cdef Listener* _listener(Loop self, int lid) except NULL:
    _check_open(self)
    if not 0 <= lid < self.nlisteners or self.listeners[lid].fd < 0:
        raise ValueError(f"no open listener {lid}")
    return &self.listeners[lid]


cdef int _connect_done(Loop self, int32_t fd) except -1:
    cdef Conn* c = &self.conns[fd]
    cdef int e = pc_so_error(fd)
    if e < 0:
        e = -e
    if e != 0:
        c.err = <uint16_t>e
        return _kill(self, fd, PC_R_CONNECT_FAILED, False)
    c.state = S_OPEN
    c.flags &= ~F_DEADLINE
    c.last_rx = c.last_tx = <uint32_t>self.now_ms
    self.st.connecting -= 1
    self.st.connected += 1
    self.b_open.append((_cid(self, fd), -1))
    if c.wq_head != NULL:
        _mark_dirty(self, fd)
    _timer_arm(self, fd)
    return 0


cdef inline bint _bucket_take(Bucket* b, double rate, double burst, uint64_t now) noexcept:
    """Refill *b* for the time since its last use, then take one token if there is one."""
    if b.last_ms == 0:
        b.tokens = burst
    elif now > b.last_ms:
        b.tokens = min(burst, b.tokens + <double>(now - b.last_ms) * rate / 1000.0)
    b.last_ms = now if now else 1
    if b.tokens < 1.0:
        return False
    b.tokens -= 1.0
    return True


cdef inline uint32_t _source_hash(Loop self, const unsigned char* key) noexcept:
    # FNV-1a, seeded per loop: a peer cannot aim its addresses at one slot
    cdef uint64_t h = 1469598103934665603ULL ^ self.source_seed
    cdef int i
    for i in range(16):
        h = (h ^ key[i]) * 1099511628211ULL
    return <uint32_t>(h ^ (h >> 32))


cdef Bucket* _source_bucket(Loop self, const unsigned char* key) noexcept:
    """The bucket of a source key: its own slot among SOURCE_WAYS neighbours,
    else the least recently used of them (a full table forgets the quietest
    sources, which is what a bucket that refilled would say anyway). NULL when
    the table cannot be allocated (the limit is then not applied)."""
    cdef uint32_t base, slot, victim
    cdef int i
    cdef SourceBucket* sb
    if self.sources == NULL:
        self.sources = <SourceBucket*>calloc(SOURCE_SLOTS, sizeof(SourceBucket))
        if self.sources == NULL:
            return NULL
    base = _source_hash(self, key)
    victim = base & SOURCE_MASK
    for i in range(SOURCE_WAYS):
        slot = (base + <uint32_t>i) & SOURCE_MASK
        sb = &self.sources[slot]
        if sb.b.last_ms != 0 and memcmp(sb.key, key, 16) == 0:
            return &sb.b
        if sb.b.last_ms < self.sources[victim].b.last_ms:
            victim = slot
    sb = &self.sources[victim]
    memcpy(sb.key, key, 16)
    sb.b.last_ms = 0        # a fresh bucket: full
    return &sb.b


cdef int _admit(Loop self, Listener* L, pc_addr* peer) noexcept:
    """-1 to take a new connection, else the REFUSE_* reason to turn it away.
    Checked before the connection gets a slot: a refusal costs no Python call."""
    cdef unsigned char key[16]
    cdef Bucket* sb = NULL
    cdef int loopback
    if L.auth_ms and self.preauth_budget and (
            self.st.preauth_bytes + self.preauth_reserve > self.preauth_budget):
        return REFUSE_PREAUTH_BUDGET
    if self.source_rate > 0:
        loopback = pc_addr_key(peer, key)
        if loopback == 0 or (loopback == 1 and self.limit_loopback):
            sb = _source_bucket(self, key)
    if self.connect_rate > 0:
        if not _bucket_take(&self.connect_bucket, self.connect_rate, self.connect_burst, self.now_ms):
            return REFUSE_CONNECT_RATE
    if sb != NULL and not _bucket_take(sb, self.source_rate, self.source_burst, self.now_ms):
        if self.connect_rate > 0:
            self.connect_bucket.tokens += 1.0   # not taken after all
        return REFUSE_SOURCE_RATE
    return -1


cdef int _accept(Loop self, int lid) except -1:
    cdef Listener* L = &self.listeners[lid]
    cdef int fd, e, why
    cdef Conn* c
    cdef epoll_event ev
    cdef pc_addr peer
    cdef bytes overloaded = error_frame(PC_R_OVERLOADED)
    while L.fd >= 0:
        fd = pc_accept(L.fd, &peer)
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
        why = _admit(self, L, &peer)
        if why >= 0:
            self.st.refused[why] += 1
            pc_refuse(fd, <const unsigned char*>PyBytes_AS_STRING(overloaded),
                      PyBytes_GET_SIZE(overloaded), self.scratch, self.scratch_size)
            continue
        try:
            _init_conn(self, fd, S_OPEN, lid)
        except MemoryError:
            c_close(fd)
            raise
        L = &self.listeners[lid]
        e = _register(self, fd)
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
        self.b_open.append((_cid(self, fd), lid))
        _timer_arm(self, fd)
    return 0


cdef int _resume_listeners(Loop self) except -1:
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


cdef int _listen(Loop self, host, int port, int backlog, bint reuse_port,
                 auth_timeout, idle_timeout) except -1:
    cdef pc_addr a
    cdef int fd, lid
    cdef epoll_event ev
    cdef Listener* L
    _check_open(self)
    cdef uint32_t auth_ms = timeout_ms(auth_timeout, "auth_timeout")
    cdef uint32_t idle_ms = timeout_ms(idle_timeout, "idle_timeout")
    if auth_timeout is not None and auth_ms == 0:
        raise ValueError("auth_timeout must be > 0 (None = no auth gate)")
    _resolve(self, host, port, &a)
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


cdef bint _is_literal(host, int port) except -1:
    """True for an IP literal (or "") that _resolve takes without a lookup."""
    cdef pc_addr a
    if not isinstance(host, str):
        raise TypeError(f"host must be a str, not {type(host).__name__}")
    return pc_addr_parse(host.encode("ascii", "replace"), port, &a) == 0


# Host names are looked up in resolver threads, never on the loop thread: a
# connect to a name returns its cid at once, in state connecting, holding a
# placeholder socket (so the fd, and with it the cid, is fixed); when the
# address comes back (call_soon_threadsafe) the real socket is made, moved
# onto the placeholder's fd with dup3, registered and connected. A connect
# timeout covers the lookup; a cid closed meanwhile drops the late answer.
_RESOLVER_THREADS = 4
_resolver_lock = threading.Lock()
_resolver_jobs = collections.deque()
_resolver_state = [0, 0]        # threads started, threads idle (under the lock)
_resolver_wake = threading.Condition(_resolver_lock)


def _lookup(host, int port):
    """The first address of *host* (IPv4 first), as an IP literal string."""
    infos = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)
    infos.sort(key=lambda info: info[0] != socket.AF_INET)
    return str(infos[0][4][0])


def _resolver_main():
    while True:
        with _resolver_wake:
            _resolver_state[1] += 1
            while not _resolver_jobs:
                _resolver_wake.wait()
            _resolver_state[1] -= 1
            loop, cid, host, port, source = _resolver_jobs.popleft()
        try:
            ip = _lookup(host, port)
            src = (_lookup(source[0], source[1]), source[1]) if source is not None else None
            result = (ip, src)
        except (OSError, UnicodeError) as exc:   # gaierror is an OSError
            result = exc
        try:
            loop.call_soon_threadsafe(_resolved, loop, cid, port, result)
        except RuntimeError:
            pass        # the loop closed meanwhile
        loop = result = None


cdef int _resolver_submit(Loop self, uint64_t cid, host, int port, source) except -1:
    with _resolver_wake:
        _resolver_jobs.append((self, cid, host, port, source))
        if _resolver_state[1] == 0 and _resolver_state[0] < _RESOLVER_THREADS:
            _resolver_state[0] += 1
            threading.Thread(target=_resolver_main, name="pushcore-resolver", daemon=True).start()
        _resolver_wake.notify()
    return 0


def _resolved(Loop loop, uint64_t cid, int port, result):
    """On the loop: the lookup for *cid* is done (``(ip, (src_ip, src_port) | None)`` or the error)."""
    if not loop.closed:
        _connect_resolved(loop, cid, port, result)


cdef int _connect_resolved(Loop self, uint64_t cid, int port, result) except -1:
    cdef pc_addr a, src
    cdef pc_addr* srcp = NULL
    cdef int32_t fd = _find(self, cid)
    cdef int nfd, failed = 0, e = 0
    cdef Conn* c
    if fd < 0 or not (self.conns[fd].flags & F_RESOLVING) or self.conns[fd].state != S_CONNECTING:
        return 0        # closed or timed out meanwhile
    c = &self.conns[fd]
    c.flags &= ~F_RESOLVING
    self.resolving -= 1
    _update_time(self)
    if isinstance(result, BaseException):
        e = ENXIO       # the name did not resolve
    else:
        ip, source = result
        if pc_addr_parse(ip.encode("ascii"), port, &a) != 0:
            e = EINVAL
        if source is not None and not e:
            if pc_addr_parse(source[0].encode("ascii"), source[1], &src) != 0:
                e = EINVAL
            srcp = &src
    if not e:
        nfd = pc_connect(&a, srcp, &failed)
        if nfd < 0:
            e = -nfd
        elif dup3(nfd, fd, O_CLOEXEC) < 0:
            e = errno
            c_close(nfd)
        else:
            c_close(nfd)
            e = _register(self, fd)
            if not e:
                e = failed
    c = &self.conns[fd]
    if e:
        c.err = <uint16_t>e
        _kill(self, fd, PC_R_CONNECT_FAILED, False)
    _poke(self)
    return 0


cdef object _connect_named(Loop self, host, int port, source, uint32_t tmo):
    """connect() to a host name (or from a source name): the lookup goes to a resolver thread."""
    cdef int fd
    cdef Conn* c
    if not 0 <= port <= PC_MAX_PORT:
        raise ValueError(f"port must be in 0..65535, got {port}")
    _is_literal(host, port)     # type check
    if source is not None:
        if not isinstance(source, tuple):
            source = (source, 0)
        if not 0 <= source[1] <= PC_MAX_PORT:
            raise ValueError(f"port must be in 0..65535, got {source[1]}")
        _is_literal(source[0], source[1])   # type check
    fd = c_socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)   # the placeholder
    if fd < 0:
        raise _oserror(errno, "socket")
    _update_time(self)
    try:
        _init_conn(self, fd, S_CONNECTING, -1)
    except MemoryError:
        c_close(fd)
        raise
    self.st.open += 1
    self.st.connecting += 1
    self.resolving += 1
    cid = _cid(self, fd)
    c = &self.conns[fd]
    c.flags |= F_RESOLVING
    if tmo:
        c.deadline = <uint32_t>(self.now_ms + tmo)
        c.flags |= F_DEADLINE
        _timer_arm(self, fd)
    try:
        _resolver_submit(self, cid, host, port, source)
    except BaseException:
        _kill(self, fd, PC_R_CONNECT_FAILED, False)
        raise
    _poke(self)
    return cid


cdef object _connect(Loop self, host, int port, source, timeout):
    cdef pc_addr a, src
    cdef pc_addr* srcp = NULL
    cdef int fd, failed = 0, e
    cdef Conn* c
    _check_open(self)
    cdef uint32_t tmo = timeout_ms(timeout, "timeout")
    if not _is_literal(host, port) or (source is not None and not _is_literal(
            source[0] if isinstance(source, tuple) else source,
            source[1] if isinstance(source, tuple) else 0)):
        return _connect_named(self, host, port, source, tmo)
    _resolve(self, host, port, &a)
    if source is not None:
        if isinstance(source, tuple):
            _resolve(self, source[0], source[1], &src)
        else:
            _resolve(self, source, 0, &src)
        srcp = &src
    fd = pc_connect(&a, srcp, &failed)
    if fd < 0:
        raise _oserror(-fd, f"connect to {host}:{port}")
    _update_time(self)
    try:
        _init_conn(self, fd, S_CONNECTING, -1)
    except MemoryError:
        c_close(fd)
        raise
    e = _register(self, fd)
    if e:
        c_close(fd)
        self.conns[fd].state = S_FREE
        raise _oserror(e, "epoll_ctl")
    self.st.open += 1
    self.st.connecting += 1
    cid = _cid(self, fd)
    c = &self.conns[fd]
    if failed:
        c.err = <uint16_t>failed
        _kill(self, fd, PC_R_CONNECT_FAILED, False)
    elif tmo:
        c.deadline = <uint32_t>(self.now_ms + tmo)
        c.flags |= F_DEADLINE
        _timer_arm(self, fd)
    _poke(self)
    return cid

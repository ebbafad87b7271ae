# Python-side callbacks: TimerHandle, call_soon / call_later /
# call_soon_threadsafe, and running the ready ones in a turn. They live in a
# Python heap and deques (they are few); per-connection deadlines are in the
# timing wheel (wheel.pxi). (Included by ext/_loop.pyx.)


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


cdef int _call_handle(Loop self, TimerHandle h) except -1:
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


# Loop lag: how late the loop's timers fire (a wheel slot after its tick, a
# call_later callback after its time). A turn that fires any records one
# sample, its largest lateness: a callback or handler that blocks the loop
# shows up in the next turn's sample. Histogram bounds in seconds.
cdef double LAG_BOUNDS[LAG_BUCKETS]
LAG_BOUNDS[:] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]


cdef inline void _lag_seen(Loop self, double due) noexcept:
    """A timer due at *due* (loop seconds) fires in this turn."""
    cdef double lag = self.now_s - due
    if lag > self.lag_turn:
        self.lag_turn = lag


cdef void _lag_record(Loop self) noexcept:
    """End of the timers of a turn: record its sample, if any timer fired."""
    cdef double lag = self.lag_turn
    cdef int i = 0
    if lag < 0:
        if lag == -1.0:
            return      # no timer fired this turn
        lag = 0.0       # clock rounding
    self.lag_turn = -1.0
    self.lag_count += 1
    self.lag_sum += lag
    if lag > self.lag_max:
        self.lag_max = lag
    while i < LAG_BUCKETS and lag > LAG_BOUNDS[i]:
        i += 1
    self.lag_hist[i] += 1
    self.lag_recent[self.lag_recent_i] = <uint32_t>(lag * 1e6) if lag < 4000.0 else 4000000000u
    self.lag_recent_i = (self.lag_recent_i + 1) % LAG_RECENT
    if self.lag_recent_n < LAG_RECENT:
        self.lag_recent_n += 1


cdef int _cmp_u32(const void* a, const void* b) noexcept nogil:
    cdef uint32_t x = (<const uint32_t*>a)[0], y = (<const uint32_t*>b)[0]
    return -1 if x < y else (1 if x > y else 0)


cdef dict _lag_stats(Loop self):
    """The loop-lag numbers for stats(): the histogram (cumulative, Prometheus
    style), sum, count, max since the loop started, and percentiles of the
    last LAG_RECENT samples."""
    cdef uint32_t tmp[LAG_RECENT]
    cdef uint32_t n = self.lag_recent_n
    cdef uint64_t acc = 0
    cdef int i
    buckets = {}
    for i in range(LAG_BUCKETS):
        acc += self.lag_hist[i]
        buckets[LAG_BOUNDS[i]] = acc
    buckets[float("inf")] = acc + self.lag_hist[LAG_BUCKETS]
    memcpy(tmp, self.lag_recent, n * sizeof(uint32_t))
    qsort(tmp, n, sizeof(uint32_t), _cmp_u32)
    return {
        "count": self.lag_count,
        "sum": self.lag_sum,
        "max": self.lag_max,
        "buckets": buckets,
        "recent_count": n,
        "recent_p50": tmp[(n - 1) // 2] / 1e6 if n else 0.0,
        "recent_p99": tmp[(n - 1) * 99 // 100] / 1e6 if n else 0.0,
        "recent_max": tmp[n - 1] / 1e6 if n else 0.0,
    }


cdef int _run_callbacks(Loop self) except -1:
    cdef Py_ssize_t i, n
    cdef TimerHandle h
    while self.threadsafe:
        self.callbacks.append(self.threadsafe.popleft())
    while self.timers and (<TimerHandle>self.timers[0][2]).when <= self.now_s:
        h = heapq.heappop(self.timers)[2]
        _lag_seen(self, h.when)
        if not h._cancelled:
            self.callbacks.append(h)
    _lag_record(self)
    # only what is ready now: callbacks scheduling callbacks wait a turn
    n = len(self.callbacks)
    for i in range(n):
        h = self.callbacks.popleft()
        if not h._cancelled:
            _call_handle(self, h)
    return 0


cdef TimerHandle _call_soon(Loop self, callback, tuple args):
    _check_open(self)
    h = TimerHandle(monotonic_s(), callback, args)
    self.callbacks.append(h)
    _poke(self)
    return h


cdef TimerHandle _call_later(Loop self, delay, callback, tuple args):
    _check_open(self)
    cdef double d = delay
    if d < 0:
        d = 0
    h = TimerHandle(monotonic_s() + d, callback, args)
    self.timer_seq += 1
    heapq.heappush(self.timers, (h.when, self.timer_seq, h))
    _poke(self)
    return h


cdef TimerHandle _call_soon_threadsafe(Loop self, callback, tuple args):
    # the only entry besides stop() that another thread may use: touches
    # nothing but the deque (append is atomic) and the eventfd
    cdef uint64_t one = 1
    if self.closed:
        raise RuntimeError("the Loop is closed")
    h = TimerHandle(monotonic_s(), callback, args)
    self.threadsafe.append(h)
    c_write(self.evfd, &one, 8)
    return h

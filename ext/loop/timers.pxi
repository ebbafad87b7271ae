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


cdef int _run_callbacks(Loop self) except -1:
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
